"""``rlhf-dist serve-rm`` as a real process on loopback, and the ``ppo.reward_url`` client:
the served scores are the in-process RM's (on the rollout layout the reward group scores),
concurrent requests are batched and each gets its own scores back, the token guards
``/score`` and never shows up in the server's output, bad requests get a 4xx naming the
problem, and the client fails fast on an unreachable URL and names it after its retries."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests
import torch

TOKEN = "s3cret-token-for-the-test"
ROWS = 12


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory) -> Path:
    from rlhf_dist.config import ModelConfig
    from rlhf_dist.models import load_scalar_model, load_tokenizer

    directory = tmp_path_factory.mktemp("rm") / "model"
    section = ModelConfig()
    tokenizer = load_tokenizer(section)
    torch.manual_seed(7)
    model = load_scalar_model(section, tokenizer, "reward")
    model.save_pretrained(str(directory), safe_serialization=True)
    tokenizer.save_pretrained(str(directory))
    return directory


def start_server(rm_dir: Path, *flags: str) -> tuple:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rlhf_dist.cli",
            "serve-rm",
            "--model",
            str(rm_dir),
            "--port",
            "0",
            *flags,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()  # "serving on http://127.0.0.1:PORT" once it listens
    if not line.startswith("serving on "):
        proc.kill()
        raise AssertionError(line + proc.stderr.read())
    return proc, line.split()[-1]


def stop_server(proc) -> str:
    proc.terminate()
    out, err = proc.communicate(timeout=30)
    return out + err


@pytest.fixture(scope="module")
def server(rm_dir, tmp_path_factory):
    token_file = tmp_path_factory.mktemp("token") / "token"
    token_file.write_text(TOKEN + "\n")
    proc, url = start_server(
        rm_dir,
        "--token-file",
        str(token_file),
        "--max-rows",
        "64",
        "--max-request-mb",
        "0.05",
        "--max-wait-ms",
        "200",
    )
    yield url, proc
    if proc.poll() is None:
        stop_server(proc)


def toy_rows(n: int = ROWS):
    from rlhf_dist.toy import ToyTask

    rows = ToyTask(seed=0, num_prompts=64, eval_ratio=0.0).preference_rows()[:n]
    return [r["prompt"] for r in rows], [
        r["chosen"] if i % 2 else r["rejected"] for i, r in enumerate(rows)
    ]


def auth(token: str = TOKEN) -> dict:
    return {"Authorization": f"Bearer {token}"}


def rollout_layout_scores(rm_dir: Path, prompts, responses) -> list:
    """What the PPO reward group computes: the RM's value at the last real token of
    left-padded ``prompt ids + response ids + EOS`` (the rollout's sequences)."""
    from rlhf_dist.data import Encoder, pad
    from rlhf_dist.eval.loading import load_reward_model

    rm = load_reward_model(str(rm_dir), "cpu")
    encoder = Encoder(rm.tokenizer, 256, 128)
    seqs = [
        encoder.prompt(p) + encoder.response(r) + [encoder.eos_id]
        for p, r in zip(prompts, responses)
    ]
    ids = pad(seqs, rm.tokenizer.pad_token_id, "left")
    mask = pad([[1] * len(s) for s in seqs], 0, "left")
    with torch.no_grad():
        return rm.model.sequence_scores(ids, mask).tolist()


def test_served_scores_are_the_in_process_reward_models(server, rm_dir):
    from rlhf_dist.eval.evaluate import reward_scores
    from rlhf_dist.eval.loading import load_reward_model

    url, _ = server
    prompts, responses = toy_rows()
    answer = requests.post(
        f"{url}/score",
        json={"prompts": prompts, "responses": responses, "labels": [None] * ROWS},
        headers=auth(),
    )
    assert answer.status_code == 200, answer.text
    served = answer.json()["scores"]
    in_process = reward_scores(load_reward_model(str(rm_dir), "cpu"), prompts, responses)
    assert served == pytest.approx(in_process, abs=1e-5)
    assert served == pytest.approx(rollout_layout_scores(rm_dir, prompts, responses), abs=1e-4)
    assert len(set(round(s, 4) for s in served)) > ROWS // 2  # a real model: scores differ


def test_concurrent_requests_are_batched_and_answered_in_order(server):
    url, _ = server
    prompts, responses = toy_rows()
    single = requests.post(
        f"{url}/score", json={"prompts": prompts, "responses": responses}, headers=auth()
    ).json()["scores"]
    before = requests.get(f"{url}/health").json()
    results = {}

    def one(i: int) -> None:  # request i: rows i, i+1, i+2 (mod ROWS)
        rows = [(i + k) % ROWS for k in range(3)]
        body = {"prompts": [prompts[r] for r in rows], "responses": [responses[r] for r in rows]}
        results[i] = (rows, requests.post(f"{url}/score", json=body, headers=auth()).json())

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for rows, answer in results.values():
        assert answer["scores"] == pytest.approx([single[r] for r in rows], abs=1e-5)
    after = requests.get(f"{url}/health").json()
    assert after["status"] == "ok" and after["requests"] - before["requests"] == 8
    assert after["rows"] - before["rows"] == 24
    assert after["batches"] - before["batches"] < 8  # joined: fewer forwards than requests


def test_get_reward_answers_openrlhf_clients_with_the_score_routes_scores(server):
    """What an OpenRLHF ``--remote_rm_url`` client posts: ``query`` = prompt + response."""
    url, _ = server
    prompts, responses = toy_rows(6)
    queries = [p + r for p, r in zip(prompts, responses)]
    answer = requests.post(
        f"{url}/get_reward",
        headers=auth(),
        json={"query": queries, "prompts": prompts, "labels": [None] * 6},
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    direct = requests.post(
        f"{url}/score", headers=auth(), json={"prompts": prompts, "responses": responses}
    ).json()["scores"]
    assert body["rewards"] == pytest.approx(direct, abs=1e-6) and body["scores"] == body["rewards"]
    assert body["extra_logs"] == {}
    bad = requests.post(
        f"{url}/get_reward",
        headers=auth(),
        json={"query": ["something else entirely"] + queries[1:], "prompts": prompts},
    )
    assert (
        bad.status_code == 400
        and "field 'query' row 0: does not start with its prompt" in bad.json()["error"]
    )
    assert (
        requests.post(f"{url}/get_reward", json={"query": queries, "prompts": prompts}).status_code
        == 401
    )


@pytest.mark.parametrize(
    "body,status,message",
    [
        (b"{not json", 400, "the body is not JSON"),
        (json.dumps({"prompts": ["a"]}).encode(), 400, "field 'responses' is missing"),
        (
            json.dumps({"prompts": ["a", "b"], "responses": ["x"]}).encode(),
            400,
            "'prompts' has 2 rows but 'responses' has 1",
        ),
        (
            json.dumps({"prompts": ["a", 3], "responses": ["x", "y"]}).encode(),
            400,
            "field 'prompts' row 1: expected a string, got int",
        ),
        (
            json.dumps({"prompts": ["a"] * 65, "responses": ["x"] * 65}).encode(),
            413,
            "65 rows in one request: more than --max-rows=64",
        ),
        (
            json.dumps({"prompts": ["a" * 60000], "responses": ["x"]}).encode(),
            413,
            "request body too large",
        ),
    ],
)
def test_bad_requests_get_a_4xx_naming_the_problem(server, body, status, message):
    url, _ = server
    answer = requests.post(
        f"{url}/score", data=body, headers={**auth(), "Content-Type": "application/json"}
    )
    assert answer.status_code == status
    assert message in answer.json()["error"]


def test_the_token_guards_score_and_is_never_printed(server, rm_dir):
    url, proc = server
    body = {"prompts": ["a"], "responses": ["b"]}
    assert requests.post(f"{url}/score", json=body).status_code == 401
    wrong = requests.post(f"{url}/score", json=body, headers=auth("guess"))
    assert wrong.status_code == 401 and "bearer token" in wrong.json()["error"]
    assert requests.get(f"{url}/health").status_code == 200  # health stays open
    output = stop_server(proc)
    assert "bearer token required" in output and TOKEN not in output


@pytest.mark.slow  # starts a server process of its own
def test_server_listens_on_loopback_by_default_and_refuses_a_bad_model_path(tmp_path):
    from rlhf_dist.serving.rm_server import parser

    assert parser().parse_args(["--model", "m"]).host == "127.0.0.1"
    proc = subprocess.run(
        [sys.executable, "-m", "rlhf_dist.cli", "serve-rm", "--model", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "does not exist" in proc.stderr


@pytest.mark.slow  # starts a server process of its own
def test_client_scores_through_the_server_and_names_the_url_when_it_fails(rm_dir, monkeypatch):
    from rlhf_dist.config import load_config
    from rlhf_dist.rewards import RewardError, load_rewards
    from rlhf_dist.rewards.remote import RemoteReward

    proc, url = start_server(rm_dir)
    try:
        prompts, responses = toy_rows(5)
        ppo = load_config(
            None,
            [f"ppo.reward_url={url}", "ppo.reward_url_weight=2.0", "ppo.reward_url_batch_size=2"],
        ).ppo
        rewards = load_rewards(ppo)  # health-checked here
        got = rewards(prompts, responses, [None] * 5, [{}] * 5)
        direct = requests.post(
            f"{url}/score", json={"prompts": prompts, "responses": responses}
        ).json()
        assert got.tolist() == pytest.approx([2.0 * s for s in direct["scores"]], abs=1e-5)
        client = RemoteReward(url, retries=2, backoff_s=0.01)
    finally:
        stop_server(proc)
    # the server is gone: calls retry with backoff, then name the URL
    with pytest.raises(
        RewardError,
        match=rf"ppo.reward_url {url}/score failed after 3 "
        r"attempts: ConnectionError",
    ):
        client(prompts, responses, [None] * 5, [{}] * 5)
    with pytest.raises(RewardError, match=rf"ppo.reward_url {url}: not reachable"):
        RemoteReward(url)  # before training starts: one health check
    monkeypatch.delenv("RM_TOKEN_FOR_TEST", raising=False)
    with pytest.raises(RewardError, match=r"names \$RM_TOKEN_FOR_TEST, which is not set"):
        RemoteReward(url, token_env="RM_TOKEN_FOR_TEST")


# --------------------------------------------------------------------------- OpenRLHF's protocol


class _OpenRLHFStyleServer:
    """A reward server written to OpenRLHF's documented remote-RM format, not with our code:
    ``POST /get_reward`` ``{"query", "prompts", "labels"}`` -> ``{"rewards", "scores",
    "extra_logs"}``; the reward of a row is its response's length (query minus prompt) plus 10
    when the label is "good".  It records each body it got."""

    def __init__(self):
        import http.server

        bodies = self.bodies = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                data = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                bodies.append(data)
                rewards = [
                    len(q) - len(p) + (10.0 if lab == "good" else 0.0)
                    for q, p, lab in zip(data["query"], data["prompts"], data["labels"])
                ]
                out = json.dumps(
                    {"rewards": rewards, "scores": rewards, "extra_logs": {"n": len(rewards)}}
                ).encode()
                self.send_response(200 if self.path == "/get_reward" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/get_reward"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_client_speaks_openrlhfs_protocol_to_such_a_server():
    from rlhf_dist.config import load_config
    from rlhf_dist.rewards import RewardError, load_rewards
    from rlhf_dist.rewards.remote import RemoteReward

    server = _OpenRLHFStyleServer()
    try:
        ppo = load_config(
            None,
            [
                f"ppo.reward_url={server.url}",
                "ppo.reward_url_batch_size=2",
                "ppo.reward_url_protocol=openrlhf",
            ],
        ).ppo
        rewards = load_rewards(ppo)  # reachability checked here (no /health on such servers)
        got = rewards(
            ["p1 ", "prompt two ", "x"], ["abc", "", "defg"], ["good", "bad", "good"], [{}] * 3
        )
    finally:
        server.close()
    assert got.tolist() == [13.0, 0.0, 14.0]
    assert server.bodies == [
        {
            "query": ["p1 abc", "prompt two "],
            "prompts": ["p1 ", "prompt two "],
            "labels": ["good", "bad"],
        },
        {"query": ["xdefg"], "prompts": ["x"], "labels": ["good"]},
    ]
    with pytest.raises(RewardError, match=rf"ppo.reward_url {server.url}: not reachable"):
        RemoteReward(server.url, protocol="openrlhf")
    with pytest.raises(
        RewardError,
        match=r"ppo.reward_url_protocol: got 'trl', expected one of "
        r"\['openrlhf', 'rlhf_dist'\]",
    ):
        RemoteReward(server.url, protocol="trl")


def test_the_protocols_config_accepts_are_the_clients():
    from rlhf_dist.config.ppo import REWARD_URL_PROTOCOLS
    from rlhf_dist.rewards.remote import PROTOCOLS

    assert set(PROTOCOLS) == set(REWARD_URL_PROTOCOLS)
