"""The API's JSON parser: DRF's, with a bound on nesting checked before parsing."""

from __future__ import annotations

import codecs

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser
from rest_framework.utils import json

from panel.bounds import MAX_JSON_DEPTH, json_depth


class BoundedJSONParser(JSONParser):
    """Deeply nested JSON would exhaust the parser's recursion (a 500, even unauthenticated on
    the token endpoint); no Paddock request nests more than a few levels, so deeper is a 400."""

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = codecs.getreader(encoding)(stream).read()
            if json_depth(text) > MAX_JSON_DEPTH:
                raise ParseError(f"JSON parse error - nested deeper than {MAX_JSON_DEPTH} levels.")
            parse_constant = json.strict_constant if self.strict else None
            return json.loads(text, parse_constant=parse_constant)
        except (ValueError, LookupError) as exc:  # UnicodeDecodeError is a ValueError
            raise ParseError(f"JSON parse error - {exc}") from None
        except RecursionError:  # pragma: no cover - the depth check comes first
            raise ParseError("JSON parse error - nested too deeply.") from None
