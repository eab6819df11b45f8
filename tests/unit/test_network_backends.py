"""Network backends: how a NIC on each kind of network is written, what the host needs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from lxml import etree

from hosts.choices import ForwardMode
from hosts.models import Network
from hosts.networks import (
    BridgeBackend,
    HostdevBackend,
    IsolatedBackend,
    MacvtapBackend,
    NatBackend,
    NetworkBackend,
    backend_for,
)
from vms import domxml
from vms.services import _interface

EXPECTED = {
    ForwardMode.ISOLATED: IsolatedBackend,
    ForwardMode.NAT: NatBackend,
    ForwardMode.ROUTE: NatBackend,
    ForwardMode.OPEN: NatBackend,
    ForwardMode.BRIDGE: BridgeBackend,
    ForwardMode.PASSTHROUGH: MacvtapBackend,
    ForwardMode.PRIVATE: MacvtapBackend,
    ForwardMode.VEPA: MacvtapBackend,
    ForwardMode.HOSTDEV: HostdevBackend,
}


def test_every_forward_mode_has_its_backend():
    assert set(EXPECTED) == set(ForwardMode)
    for mode, cls in EXPECTED.items():
        assert type(backend_for(mode)) is cls, mode
        assert type(backend_for(str(mode.value))) is cls


@pytest.mark.parametrize("mode", list(ForwardMode))
def test_a_nic_names_the_libvirt_network(mode):
    network = Network(name="lan0", forward_mode=mode, bridge="br0")
    backend = backend_for(network)
    assert backend.interface_source(network) == ("network", {"network": "lan0"})


@pytest.mark.parametrize("mode", list(ForwardMode))
def test_todays_networks_need_no_host_actions(mode):
    network = SimpleNamespace(name="lan0", forward_mode=mode, bridge="")
    assert backend_for(network).host_actions(network) == []


def test_an_unknown_mode_is_a_plain_libvirt_network():
    backend = backend_for("vxlan")
    assert type(backend) is NetworkBackend
    assert backend.interface_source(SimpleNamespace(name="x")) == ("network", {"network": "x"})
    assert backend_for(None).kind == "network"


def test_the_domain_builder_writes_the_interface_the_backend_gives():
    """A NIC's <interface> comes from its network's backend: type and <source> attributes."""
    net = Network(name="lan", forward_mode=ForwardMode.BRIDGE)
    params = _interface(net)
    assert params == {"interface_type": "network", "interface_source": {"network": "lan"}}
    nic = domxml.NicBuild(
        mac="52:54:00:00:00:01",
        source="lan",
        source_type="bridge",
        source_attrs={"bridge": "br-lan"},
    )
    el = domxml.nic_element(nic)
    assert el.get("type") == "bridge"
    assert etree.tostring(el.find("source")) == b'<source bridge="br-lan"/>'
    # Without attributes the source names the network, as before.
    plain = domxml.nic_element(domxml.NicBuild(mac="52:54:00:00:00:02", source="lan"))
    assert plain.get("type") == "network" and plain.find("source").get("network") == "lan"
