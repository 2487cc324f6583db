"""Insights: what imageapi adds per agent step, and summary search latency over 10,000 summaries.

1. Agent step overhead. An instant Ollama stand-in (tests/llm_standins.py, in a process of its own)
   answers each chat request at once: `--steps` rounds of one get_photo_metadata tool call, then
   the final answer. Reference: the same number of chat requests sent straight through the
   `ollama` client with the same growing conversation (the HTTP round trips the model server
   costs anyway). Subject: InsightService.generate() on a one-photo library: the provider layer,
   the tool loop, the tool itself (SQL), the title parse and the stored insight. The overhead per
   step is (subject - reference) / (steps + 1); step = one model call and its tool calls.
2. Summary search. `--summaries` (10,000) rows of `--dim` (768, nomic-embed-text) unit vectors in
   a fresh database; cosine search for the top 5: the first search (matrix built from SQLite),
   later ones (cached matrix), within a +-3-day window, with the chunked scan used past the cache
   cap, and end to end with the query embedded by the stand-in.

Targets: overhead <= 10 ms per step; cached search <= 50 ms; first search <= 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

from bench.common import REPO, Verdicts, base_parser, median, print_header, python, python_env, work_dir


def start_standin(steps: int, dim: int, data: Path) -> tuple[subprocess.Popen[str], str]:
    env = python_env(data)
    proc = subprocess.Popen([python(), "-m", "tests.llm_standins", "--rounds", str(steps), "--dim", str(dim)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("URL "):
        proc.kill()
        raise SystemExit(f"the stand-in did not start: {line!r}")
    return proc, line[4:]


async def agent_figures(args: argparse.Namespace, url: str, work: Path) -> tuple[float, float, float]:
    import ollama

    from tests.test_insights_support import make_library

    env = {"OLLAMA_PRIMARY_URL": url, "OLLAMA_PRIMARY_MODEL": "bench", "AGENTIC_MAX_ITERATIONS": str(args.steps),
           "APOLLO_API_BASE_URL": "", "NOMINATIM_URL": "http://127.0.0.1:9"}
    lib = await make_library(work / "agent", env)
    service = lib.service()
    client = ollama.AsyncClient(host=url)
    photo = await lib.photo()
    tools = service.toolbox(photo, None).specs()
    refs: list[float] = []
    subs: list[float] = []
    try:
        for _ in range(3):  # warm both paths (connections, imports)
            await service.generate(photo)
        for _ in range(args.repeat):
            # Reference: the same requests through the bare client, the conversation growing as it does.
            started = time.perf_counter()
            msgs: list[dict[str, object]] = [{"role": "system", "content": "x" * 800},
                                             {"role": "user", "content": "Write an insight about this photo."}]
            for _ in range(args.steps + 1):
                resp = await client.chat(model="bench", messages=msgs, tools=tools, stream=False)
                for call in resp.message.tool_calls or []:
                    msgs.append({"role": "assistant", "content": "", "tool_calls": [
                        {"function": {"name": call.function.name, "arguments": call.function.arguments}}]})
                    msgs.append({"role": "tool", "content": "{" + "\"k\": 1, " * 40 + "\"z\": 0}",
                                 "tool_name": call.function.name})
            refs.append(time.perf_counter() - started)
            started = time.perf_counter()
            insight = await service.generate(photo)
            subs.append(time.perf_counter() - started)
            assert insight["timings"]["rounds"] == args.steps, insight["timings"]
    finally:
        await client._client.aclose()
        await service.aclose()
        await lib.db.close()
    ref, sub = median(refs), median(subs)
    return ref, sub, (sub - ref) / (args.steps + 1)


async def search_figures(args: argparse.Namespace, url: str, work: Path) -> dict[str, float]:
    import numpy as np

    from imageapi.core.database import transaction
    from imageapi.core.db import connect
    from imageapi.core.insights.providers import Backends
    from imageapi.core.insights.settings import insight_settings_from_env
    from imageapi.core.insights.summaries import SummaryIndex, search_summaries

    db = await connect(work / "search" / "imageapi.db")
    rng = np.random.default_rng(7)
    first_day = date(2015, 1, 1)
    contacts = [f"contact{i:02d}" for i in range(max(1, args.summaries // 3650 + 1))]
    rows = []
    for i in range(args.summaries):
        v = rng.standard_normal(args.dim).astype(np.float32)
        v /= np.linalg.norm(v)
        day = first_day + timedelta(days=i // len(contacts))
        rows.append((day.isoformat(), contacts[i % len(contacts)], f"summary {i} " + "words " * 60, 10, "m", "s",
                     "embed", "2024-01-01T00:00:00Z", v.astype("<f4").tobytes()))
    async with transaction(db):
        await db.executemany(
            "INSERT INTO conversation_summaries (day, contact, summary, message_count, model, server, embedding_model, "
            "created_at, embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    queries = [rng.standard_normal(args.dim).astype(np.float32).tolist() for _ in range(args.repeat)]
    out: dict[str, float] = {}
    index = SummaryIndex(db)
    started = time.perf_counter()
    await index.search(queries[0], "embed", limit=5)
    out["first"] = time.perf_counter() - started
    warm = []
    for q in queries:
        started = time.perf_counter()
        hits = await index.search(q, "embed", limit=5)
        warm.append(time.perf_counter() - started)
        assert len(hits) == 5
    out["cached"] = median(warm)
    around = first_day + timedelta(days=args.summaries // len(contacts) // 2)
    windowed = []
    for q in queries:
        started = time.perf_counter()
        await index.search(q, "embed", around=around, days=3, limit=5)
        windowed.append(time.perf_counter() - started)
    out["window"] = median(windowed)
    chunked = SummaryIndex(db, max_cached_bytes=0)
    streamed = []
    for q in queries[: max(3, args.repeat // 4)]:
        started = time.perf_counter()
        await chunked.search(q, "embed", limit=5)
        streamed.append(time.perf_counter() - started)
    out["chunked"] = median(streamed)
    backends = Backends(insight_settings_from_env({"OLLAMA_PRIMARY_URL": url, "OLLAMA_EMBEDDING_MODEL": "embed"}))
    e2e = []
    try:
        for i in range(args.repeat):
            started = time.perf_counter()
            await search_summaries(index, backends, f"dinner with friends number {i}", limit=5)
            e2e.append(time.perf_counter() - started)
    finally:
        await backends.aclose()
        await db.close()
    out["end_to_end"] = median(e2e)
    return out


def main() -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--steps", type=int, default=5, help="tool rounds per insight")
    parser.add_argument("--repeat", type=int, default=20, help="insights (and searches) measured")
    parser.add_argument("--summaries", type=int, default=10_000, help="stored summaries to search")
    parser.add_argument("--dim", type=int, default=768, help="embedding length")
    args = parser.parse_args()
    print_header("bench_insights: agent step overhead, summary search latency", args)
    verdicts = Verdicts()
    with work_dir(args, "insights") as work:
        proc, url = start_standin(args.steps, args.dim, work)
        try:
            ref, sub, per_step = asyncio.run(agent_figures(args, url, work))
            search = asyncio.run(search_figures(args, url, work))
        finally:
            proc.terminate()
            proc.wait(10)
    calls = args.steps + 1
    print(f"agent: {args.steps} tool rounds + the answer = {calls} model calls per insight, median of {args.repeat}")
    print(f"   bare ollama client, same requests: {ref * 1000:8.1f} ms ({ref * 1000 / calls:.2f} ms per call)")
    print(f"   InsightService.generate():         {sub * 1000:8.1f} ms ({sub * 1000 / calls:.2f} ms per step)")
    print(f"   imageapi's overhead per step:      {per_step * 1000:8.2f} ms")
    print(f"summary search over {args.summaries:,} summaries of {args.dim} floats (top 5):")
    for key, label in (("first", "first search (matrix from SQLite)"), ("cached", "cached matrix"),
                       ("window", "+-3-day window, cached"), ("chunked", "chunked scan (past the cache cap)"),
                       ("end_to_end", "end to end, query embedded by the stand-in")):
        print(f"   {label + ':':45} {search[key] * 1000:8.2f} ms")
    print()
    verdicts.check("agent overhead per step", f"{per_step * 1000:.2f} ms", "<= 10 ms", per_step <= 0.010)
    verdicts.check("cached summary search", f"{search['cached'] * 1000:.2f} ms", "<= 50 ms", search["cached"] <= 0.050)
    verdicts.check("first summary search", f"{search['first'] * 1000:.0f} ms", "<= 2000 ms", search["first"] <= 2.0)
    return verdicts.summary()


if __name__ == "__main__":
    sys.exit(main())
