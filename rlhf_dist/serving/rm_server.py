"""``rlhf-dist serve-rm --model out/rm/model``: a trained reward model behind HTTP (aiohttp),
so that many PPO/GRPO jobs (``ppo.reward_url``) can share one copy.

* ``POST /score`` ``{"prompts": [str], "responses": [str], "labels": [...]?}`` ->
  ``{"scores": [float]}``: each (prompt, response) scored as in RM training
  (``prompt + response + EOS``, :func:`rlhf_dist.eval.evaluate.reward_scores`) -- the
  scores the in-process reward group gives the same rows.
* ``POST /get_reward`` -- OpenRLHF's remote reward protocol (its ``--remote_rm_url``
  clients): ``{"query": [prompt + response], "prompts": [str], "labels": [...]?}`` ->
  ``{"rewards": [float], "scores": [float], "extra_logs": {}}``, each query split into its
  prompt (which it must start with) and response, then scored as ``/score`` scores.
* ``GET /health`` -> ``{"status": "ok", "model": ..., "requests": n, "batches": n, ...}``.
* Concurrent requests are batched: rows of requests waiting up to ``--max-wait-ms`` are
  scored together, up to ``--batch-size`` rows per forward (one forward at a time).
* Listens on 127.0.0.1 unless ``--host`` says otherwise.  With ``--token-file`` every
  ``/score`` needs ``Authorization: Bearer <the file's content>`` (401 otherwise); the token
  is never printed or logged.
* Refused with a 4xx that names the problem: a body that is not JSON, a missing or
  mistyped field (named, with the row), prompts and responses of different lengths (400);
  more than ``--max-rows`` rows or a body over ``--max-request-mb`` (413).
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import logging
import signal
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple

from aiohttp import web

log = logging.getLogger(__name__)
RewardShaper = Callable[[List[str], List[str]], List[float]]


class BadRequest(ValueError):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _strings(data: dict, key: str) -> List[str]:
    if key not in data:
        raise BadRequest(f"field '{key}' is missing")
    rows = data[key]
    if not isinstance(rows, list):
        raise BadRequest(f"field '{key}' must be a list of strings, got {type(rows).__name__}")
    for i, row in enumerate(rows):
        if not isinstance(row, str):
            raise BadRequest(f"field '{key}' row {i}: expected a string, got {type(row).__name__}")
    return rows


def parse_score_request(data: Any, max_rows: int) -> Tuple[List[str], List[str]]:
    """(prompts, responses) of a ``/score`` body, or :class:`BadRequest` naming what is
    wrong (``labels``, if given, must be a list of the same length; the RM ignores them)."""
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object with 'prompts' and 'responses'")
    prompts, responses = _strings(data, "prompts"), _strings(data, "responses")
    if len(prompts) != len(responses):
        raise BadRequest(f"'prompts' has {len(prompts)} rows but 'responses' has {len(responses)}")
    labels = data.get("labels")
    if labels is not None and (not isinstance(labels, list) or len(labels) != len(prompts)):
        raise BadRequest(
            f"field 'labels' must be a list of {len(prompts)} values (one per row) or absent"
        )
    if len(prompts) > max_rows:
        raise BadRequest(
            f"{len(prompts)} rows in one request: more than --max-rows="
            f"{max_rows}; send smaller batches",
            status=413,
        )
    return prompts, responses


def parse_get_reward_request(data: Any, max_rows: int) -> Tuple[List[str], List[str]]:
    """(prompts, responses) of an OpenRLHF ``/get_reward`` body: each ``query`` is its
    prompt followed by the response; :class:`BadRequest` naming the field and row otherwise."""
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object with 'query' and 'prompts'")
    queries, prompts = _strings(data, "query"), _strings(data, "prompts")
    if len(queries) != len(prompts):
        raise BadRequest(f"'query' has {len(queries)} rows but 'prompts' has {len(prompts)}")
    for i, (query, prompt) in enumerate(zip(queries, prompts)):
        if not query.startswith(prompt):
            raise BadRequest(
                f"field 'query' row {i}: does not start with its prompt "
                f"('prompts' row {i}); a query is the prompt followed by the "
                "response"
            )
    responses = [q[len(p) :] for q, p in zip(queries, prompts)]
    return parse_score_request(
        {"prompts": prompts, "responses": responses, "labels": data.get("labels")}, max_rows
    )


class Batcher:
    """Joins the rows of requests that arrive together into one scoring call, run in a
    thread (the event loop keeps accepting requests meanwhile), one call at a time."""

    def __init__(self, score: RewardShaper, batch_size: int, max_wait_s: float):
        self.score, self.batch_size, self.max_wait_s = score, batch_size, max_wait_s
        self.queue: "asyncio.Queue" = asyncio.Queue()
        self.requests = self.batches = self.rows = 0

    async def submit(self, prompts: List[str], responses: List[str]) -> List[float]:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((prompts, responses, future))
        self.requests += 1
        return await future

    async def _collect(self) -> list:
        loop = asyncio.get_running_loop()
        items = [await self.queue.get()]
        deadline = loop.time() + self.max_wait_s
        while sum(len(p) for p, _, _ in items) < self.batch_size:
            try:
                items.append(
                    await asyncio.wait_for(self.queue.get(), max(deadline - loop.time(), 0))
                )
            except asyncio.TimeoutError:
                break
        return items

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await self._collect()
            prompts = [p for batch, _, _ in items for p in batch]
            responses = [r for _, batch, _ in items for r in batch]
            try:
                scores = await loop.run_in_executor(None, self.score, prompts, responses)
            except Exception as err:  # noqa: BLE001 - every waiting request learns of it
                for _, _, future in items:
                    future.set_exception(err)
                continue
            self.batches, self.rows = self.batches + 1, self.rows + len(prompts)
            start = 0
            for batch, _, future in items:
                future.set_result(scores[start : start + len(batch)])
                start += len(batch)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def make_app(
    score: RewardShaper,
    model_name: str,
    token: Optional[str],
    batch_size: int = 32,
    max_wait_ms: float = 10.0,
    max_rows: int = 4096,
    max_request_mb: float = 16.0,
) -> web.Application:
    """The aiohttp application; ``score(prompts, responses) -> scores`` does the work."""

    @web.middleware
    async def bearer(request: web.Request, handler):
        if token is not None and request.path != "/health":
            sent = request.headers.get("Authorization", "")
            if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
                return _error(401, "missing or wrong bearer token (Authorization header)")
        return await handler(request)

    app = web.Application(middlewares=[bearer], client_max_size=int(max_request_mb * 2**20))

    async def start_batcher(app: web.Application) -> None:
        app["batcher"] = Batcher(score, batch_size, max_wait_ms / 1000)
        app["batcher_task"] = asyncio.create_task(app["batcher"].run())

    async def stop_batcher(app: web.Application) -> None:
        app["batcher_task"].cancel()

    async def health(request: web.Request) -> web.Response:
        b = request.app["batcher"]
        return web.json_response(
            {
                "status": "ok",
                "model": model_name,
                "requests": b.requests,
                "batches": b.batches,
                "rows": b.rows,
                "batch_size": batch_size,
                "max_rows": max_rows,
            }
        )

    def scoring_route(parse, answer):
        """A POST route: ``parse(body, max_rows) -> (prompts, responses)``, the scores of the
        batcher given back as ``answer(scores)``."""

        async def route(request: web.Request) -> web.Response:
            try:
                data = await request.json()
            except web.HTTPRequestEntityTooLarge as err:
                return _error(413, f"request body too large: {err.text}")
            except ValueError as err:
                return _error(400, f"the body is not JSON: {err}")
            try:
                prompts, responses = parse(data, max_rows)
            except BadRequest as err:
                return _error(err.status, str(err))
            scores = await request.app["batcher"].submit(prompts, responses) if prompts else []
            return web.json_response(answer(scores))

        return route

    app.router.add_get("/health", health)
    app.router.add_post(
        "/score", scoring_route(parse_score_request, lambda scores: {"scores": scores})
    )
    app.router.add_post(
        "/get_reward",
        scoring_route(
            parse_get_reward_request,
            lambda scores: {"rewards": scores, "scores": scores, "extra_logs": {}},
        ),
    )
    app.on_startup.append(start_batcher)
    app.on_cleanup.append(stop_batcher)
    return app


def read_token(path: Optional[str]) -> Optional[str]:
    if path is None:
        return None
    token = Path(path).read_text().strip()
    if not token:
        raise ValueError(f"--token-file {path} is empty")
    return token


def parser() -> argparse.ArgumentParser:
    from rlhf_dist.eval.evaluate import MAX_LENGTH, MAX_PROMPT_LENGTH

    p = argparse.ArgumentParser(prog="rlhf-dist serve-rm", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a saved reward model (e.g. out/rm/model)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: loopback only; 0.0.0.0 for every interface)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=8000,
        help="port (0: one the OS picks; the first line printed says which)",
    )
    p.add_argument("--token-file", help="file holding the bearer token clients must send")
    p.add_argument("--batch-size", type=int, default=32, help="rows per forward")
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=10.0,
        help="how long a request waits for others to batch with",
    )
    p.add_argument("--max-rows", type=int, default=4096, help="most rows in one request")
    p.add_argument("--max-request-mb", type=float, default=16.0, help="largest request body")
    p.add_argument(
        "--max-length",
        type=int,
        default=MAX_LENGTH,
        help="tokens scored per row (prompt + response + EOS), as in RM training",
    )
    p.add_argument(
        "--max-prompt-length",
        type=int,
        default=MAX_PROMPT_LENGTH,
        help="prompt tokens kept (left-truncated)",
    )
    p.add_argument(
        "--normalize",
        action="store_true",
        help="apply the model's saved score statistics (rm.save_score_stats)",
    )
    p.add_argument("--device", default=None, help="cpu / cuda (default: cuda if available)")
    return p


def model_scorer(args: argparse.Namespace) -> RewardShaper:
    from rlhf_dist.eval.evaluate import reward_scores
    from rlhf_dist.eval.loading import load_reward_model

    rm = load_reward_model(args.model, args.device)

    def score(prompts: Sequence[str], responses: Sequence[str]) -> List[float]:
        return reward_scores(
            rm,
            prompts,
            responses,
            batch_size=args.batch_size,
            normalize=args.normalize,
            max_length=args.max_length,
            max_prompt_length=args.max_prompt_length,
        )

    return score


async def serve(app: web.Application, host: str, port: int) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"serving on http://{host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        token = read_token(args.token_file)
        score = model_scorer(args)
    except (OSError, ValueError) as err:
        print(f"rlhf-dist serve-rm: {err}", file=sys.stderr, flush=True)
        return 2
    log.info("reward model %s loaded%s", args.model, "; bearer token required" if token else "")
    app = make_app(
        score,
        args.model,
        token,
        args.batch_size,
        args.max_wait_ms,
        args.max_rows,
        args.max_request_mb,
    )
    asyncio.run(serve(app, args.host, args.port))
    return 0
