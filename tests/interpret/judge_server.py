"""A local OpenAI-compatible chat-completions server for the judge tests, run as its own process.

    python judge_server.py PORT_FILE LOG_FILE SCRIPT_FILE

SCRIPT_FILE (JSON): {"actions": [...], "delay": seconds before each default answer, "model": "smollm2"?}.
Requests take the scripted actions in arrival order, then the default: a well-formed answer built from the
prompt, or, with "model": "smollm2", the bundled SmolLM2-135M-Instruct's own answer (chat template, greedy).
Actions: {"status": 429, "retry_after": 1}, {"status": 500}, {"sleep": s} (then a normal answer; the client
has timed out by then), {"content": "..."} (answer with that text), {"raw": "...", "type": "text/html"} (that
body with status 200). Every request is logged to LOG_FILE as one
JSON line (arrival time, hash of the messages, action); the Authorization header is never logged.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT_FILE, LOG_FILE, SCRIPT_FILE = sys.argv[1:4]
SCRIPT = json.loads(open(SCRIPT_FILE).read())
ACTIONS = list(SCRIPT.get("actions", []))
LOCK = threading.Lock()
COUNT = [0]
GENERATE = None


def load_smollm2():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sae_lens_routing.offline.local_model import gguf_to_hf_folder, smollm2_gguf_path

    torch.set_num_threads(1)
    folder = gguf_to_hf_folder(smollm2_gguf_path())  # dequantised once, cached
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=torch.float32).eval()

    def generate(messages, max_tokens):
        # return_dict: transformers 5 returns a BatchEncoding either way, 4.x only when asked
        ids = tok.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=min(max_tokens, 40), do_sample=False)
        return tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)

    return generate


def default_answer(messages, max_tokens):
    if GENERATE is not None:
        with LOCK:  # one generation at a time
            return GENERATE(messages, max_tokens)
    prompt = messages[-1]["content"]
    if "Feature category: [Low-level" in prompt:
        return "Feature category: Low-level\nScore: 4\nExplanation: the word it marks, in news text."
    n = re.search(r"Below are (\d+) numbered", prompt)
    if n:
        return json.dumps([(i + 1) % 2 for i in range(int(n.group(1)))])
    return "Explanation: words from news reports."


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with LOCK:
            action = ACTIONS.pop(0) if ACTIONS else {}
            COUNT[0] += 1
            entry = {
                "n": COUNT[0],
                "t": time.time(),
                "path": self.path.split("?")[0],
                "hash": hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).hexdigest(),
                "action": action,
                "seed": body.get("seed"),
            }
            with open(LOG_FILE, "a") as f:
                f.write(json.dumps(entry) + "\n")
        status = action.get("status", 200)
        if status != 200:
            payload = json.dumps({"error": {"message": f"scripted {status}", "type": "scripted"}}).encode()
            self.send_response(status)
            if "retry_after" in action:
                self.send_header("Retry-After", str(action["retry_after"]))
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        if "raw" in action:
            payload = action["raw"].encode()
            self.send_response(200)
            self.send_header("Content-Type", action.get("type", "application/json"))
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        time.sleep(action.get("sleep", SCRIPT.get("delay", 0.0)))
        content = action.get("content")
        if content is None:
            content = default_answer(body["messages"], body.get("max_tokens") or 128)
        prompt_chars = sum(len(m["content"]) for m in body["messages"])
        reply = {
            "id": f"chatcmpl-{COUNT[0]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
            ],
            "usage": {
                "prompt_tokens": prompt_chars // 4,
                "completion_tokens": len(content) // 4 + 1,
                "total_tokens": prompt_chars // 4 + len(content) // 4 + 1,
            },
        }
        payload = json.dumps(reply).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (time-out)
            pass


if __name__ == "__main__":
    if SCRIPT.get("model") == "smollm2":
        GENERATE = load_smollm2()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with open(PORT_FILE + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(PORT_FILE + ".tmp", PORT_FILE)
    server.serve_forever()
