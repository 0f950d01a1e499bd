"""A real local HTTP server speaking the OpenAI chat-completions wire format.

It stands in for the remote model server (the boundary we don't own): it
decodes the image the node actually sent, finds the bright objects in it and
answers in the wire contract's object form, boxes xyxy normalised to 0..1000
of the image as sent. So the answers are computed from the request, and a box
that comes back in source pixels proves the whole path (resize, encode,
parse, map back).

A base URL ``http://127.0.0.1:PORT/d<ms>/v1`` makes the answer wait ``ms``
milliseconds (a slow model); ``/v1`` answers at once.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import cv2
import numpy as np

_PATH_RE = re.compile(r"^(?:/d(?P<ms>\d+))?/v1/(?P<what>chat/completions|models)$")
_TASK_RE = re.compile(r"^Task: (\w+)$", re.MULTILINE)
_ACTIONS_RE = re.compile(r"^Allowed actions: (.*)$", re.MULTILINE)


@dataclass
class Seen:
    """One chat request as the server received it."""

    t: float  # [s] monotonic, when the request was read, decoded and answered (before any delay)
    task: str
    user: str
    width: int
    height: int
    objects: int
    t_arrive: float = 0.0  # [s] monotonic, when the handler started (headers read, body not yet)


def find_objects(bgr: np.ndarray[Any, Any]) -> list[tuple[int, int, int, int]]:
    """Bounding boxes (x1, y1, x2, y2 pixel edges) of bright blobs, left to right."""
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    _, mask = cv2.threshold(grey, 200, 255, cv2.THRESH_BINARY)
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
    boxes = []
    for i in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[i])
        if area >= 4:
            boxes.append((x, y, x + w, y + h))
    return sorted(boxes)


def answer_for(user: str, bgr: np.ndarray[Any, Any]) -> str:
    """The model's JSON answer for one request (computed from its text and image)."""
    h, w = bgr.shape[:2]
    task_match = _TASK_RE.search(user)
    task = task_match.group(1) if task_match else "detect"
    objects = [
        {
            "label": "white cube",
            "bbox_2d": [
                round(x1 * 1000 / w),
                round(y1 * 1000 / h),
                round(x2 * 1000 / w),
                round(y2 * 1000 / h),
            ],
            "score": 0.9,
            "description": "",
        }
        for (x1, y1, x2, y2) in find_objects(bgr)
    ]
    answer: dict[str, Any] = {"objects": objects, "summary": f"{len(objects)} white cube(s)"}
    if len(objects) >= 2:
        answer["relations"] = [{"subject": 0, "relation": "left_of", "object": 1}]
    if task == "command":
        m = _ACTIONS_RE.search(user)
        actions = [a.strip() for a in m.group(1).split(",")] if m else []
        answer["action"] = {"name": actions[0], "target": 0} if actions and objects else None
    return json.dumps(answer)


@dataclass
class _State:
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def _json(self, status: int, payload: object) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        m = _PATH_RE.match(self.path)
        if not m or m.group("what") != "models":
            self._json(404, {"error": {"message": "not found"}})
            return
        self._json(200, {"object": "list", "data": [{"id": "test-model", "object": "model"}]})

    def do_POST(self) -> None:
        t_arrive = time.monotonic()
        m = _PATH_RE.match(self.path)
        if not m or m.group("what") != "chat/completions":
            self._json(404, {"error": {"message": "not found"}})
            return
        length = int(self.headers.get("Content-Length", "0"))
        req = json.loads(self.rfile.read(length))
        user, image = "", None
        for msg in req["messages"]:
            if msg["role"] != "user":
                continue
            for part in msg["content"]:
                if part["type"] == "text":
                    user = part["text"]
                elif part["type"] == "image_url":
                    b64 = part["image_url"]["url"].split(",", 1)[1]
                    buf = np.frombuffer(base64.b64decode(b64), dtype=np.uint8)
                    image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        if image is None:
            self._json(400, {"error": {"message": "no image"}})
            return
        text = answer_for(user, image)
        task_match = _TASK_RE.search(user)
        with self.server.state.lock:
            self.server.state.seen.append(
                Seen(
                    t=time.monotonic(),
                    task=task_match.group(1) if task_match else "",
                    user=user,
                    width=image.shape[1],
                    height=image.shape[0],
                    objects=len(json.loads(text)["objects"]),
                    t_arrive=t_arrive,
                )
            )
        if m.group("ms"):
            time.sleep(int(m.group("ms")) / 1000.0)
        self._json(
            200,
            {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": req.get("model", "test-model"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
            },
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: _State) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


class ModelServer:
    """The server on a free loopback port, serving from a daemon thread."""

    def __init__(self) -> None:
        self._state = _State()
        self._server = _Server(self._state)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, delay_ms: int = 0) -> str:
        """Base URL (``.../v1``), answering after ``delay_ms``."""
        port = self._server.server_address[1]
        prefix = f"/d{delay_ms}" if delay_ms else ""
        return f"http://127.0.0.1:{port}{prefix}/v1"

    def seen(self) -> list[Seen]:
        """Requests received so far."""
        with self._state.lock:
            return list(self._state.seen)

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
