"""What commands print for --json: one JSON object on one line of stdout."""
from __future__ import annotations

import json
from typing import Any


def print_json(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, ensure_ascii=False))
