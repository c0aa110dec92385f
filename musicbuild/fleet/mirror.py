"""The shared journal without a coordinator: journal records written through to the shared cache.

Key ``jr/<gen_key>`` holds a JSON list of that key's job records (one per attempt, newest state).
Only one runner works on a key at a time (shards split keys, a coordinator leases them), so the
read-modify-write of a key's list races with nobody; a fresh runner that replaces a dead one reads
the list for the keys it needs and resumes the jobs instead of paying again.
"""
from __future__ import annotations

import json
import threading
from typing import Any, Mapping


class StoreMirror:
    def __init__(self, store: Any) -> None:
        self.store = store
        self.display = store.display
        self._known: dict[str, dict[int, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def _key(self, gen_key: str) -> str:
        return "jr/" + gen_key

    def get(self, gen_key: str) -> list[dict[str, Any]]:
        data = self.store.get(self._key(gen_key))
        if not data:
            return []
        try:
            records = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return []
        return [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []

    def put(self, record: Mapping[str, Any]) -> None:
        gen_key = str(record["gen_key"])
        with self._lock:
            if gen_key not in self._known:
                self._known[gen_key] = {int(r.get("attempt", 0)): r for r in self.get(gen_key)}
            self._known[gen_key][int(record["attempt"])] = dict(record)
            body = [self._known[gen_key][n] for n in sorted(self._known[gen_key])]
            # written under the lock: two threads' puts of one key never land in the other order
            self.store.put(self._key(gen_key), json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
