"""A model served over the OpenAI-compatible completions API (``alphallm serve``) and the backend that
reads it (``lm/served.py``): the same tokens, log-probs and results as the model in process."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from alphallm.cli import main
from alphallm.commands.eval_cmd import chosen_model
from alphallm.errors import UserError
from alphallm.lm import served
from alphallm.lm.hf import TransformersLM
from alphallm.lm.loading import load_causal_lm
from alphallm.lm.served import ServedLM
from alphallm.lm.server import make_server
from alphallm.tasks import get_task


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, TransformersLM]]:
    """``arith-base`` served on a free port: (its URL, the backend behind it)."""
    lm = TransformersLM.from_pretrained("arith-base")
    http = make_server(lm, "arith-base", port=0)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{http.server_address[1]}", lm
    http.shutdown()
    http.server_close()


def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"{url}/v1/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_served_model_samples_and_scores_as_the_local_one(
    server: tuple[str, TransformersLM],
) -> None:
    url, behind = server
    task = get_task("arith")
    states = [task.format_prompt(p) for p in task.problems("test")[:6]]
    local = TransformersLM.from_pretrained("arith-base")
    client = ServedLM(url)
    assert client.model == "arith-base" and client.base_url == url + "/v1"
    # Greedy, so that every sample of a state is its greedy option (asked for once: the server, as
    # vLLM, refuses n > 1 when greedy), with three ways to end: a stop string, EOS, the token limit.
    cases = [(task.stop, task.max_option_tokens), ((), 300), (task.stop, 4)]
    finishes = set()
    for stop, max_tokens in cases:
        want = local.sample(states, n=1, temperature=0, stop=stop, max_tokens=max_tokens)
        got = client.sample(states, n=[1, 3, 1, 2, 1, 1], temperature=0, stop=stop, max_tokens=max_tokens)
        assert [len(g) for g in got] == [1, 3, 1, 2, 1, 1]
        for w, g in zip(want, got):
            for c in g:
                assert (c.text, c.token_ids, c.finish_reason) == (
                    w[0].text,
                    w[0].token_ids,
                    w[0].finish_reason,
                )
                assert c.logprobs == pytest.approx(w[0].logprobs, abs=1e-5)
                finishes.add(c.finish_reason)
    assert finishes == {"stop", "eos", "length"}
    continuations = [w[0].text for w in want] + ["", "12+7=19\n"]
    scored_states = states + states[:2]
    assert [len(x) for x in client.logprobs(scored_states, continuations)] == [
        len(x) for x in local.logprobs(scored_states, continuations)
    ]
    for got_lp, want_lp in zip(
        client.logprobs(scored_states, continuations), local.logprobs(scored_states, continuations)
    ):
        assert got_lp == pytest.approx(want_lp, abs=1e-5)
    # Compute as the server counted it: what it encoded and sampled. The states after each first
    # option start with a text the server's prefix store holds, and that part is not encoded again.
    first = client.sample(states, n=1, temperature=0, stop=task.stop, max_tokens=task.max_option_tokens)
    deeper = [s + c[0].text for s, c in zip(states, first)]
    before, usage_before = behind.usage.copy(), client.usage.copy()
    client.sample(deeper, n=2, temperature=1.0, stop=task.stop, max_tokens=20, seed=3)
    spent, counted = behind.usage.since(before), client.usage.since(usage_before)
    assert counted.generated_tokens == spent.generated_tokens > 0
    assert counted.prefill_tokens == spent.prefill_tokens < sum(len(behind.encode(s)) for s in deeper)


def test_seeded_sampling_through_a_server_repeats(server: tuple[str, TransformersLM]) -> None:
    url, _ = server
    task = get_task("arith")
    states = [task.format_prompt(p) for p in task.problems("test")[:4]]
    client = ServedLM(url + "/v1#arith-base")
    first = client.sample(states, n=[2, 3, 1, 3], temperature=1.0, stop=task.stop, max_tokens=40, seed=7)
    again = client.sample(states, n=[2, 3, 1, 3], temperature=1.0, stop=task.stop, max_tokens=40, seed=7)
    assert first == again
    # numpy counts and seeds (a search's own) go out as JSON numbers, to the same samples
    counts = list(np.array([2, 3, 1, 3]))
    assert (
        client.sample(states, n=counts, temperature=1.0, stop=task.stop, max_tokens=40, seed=np.int64(7))
        == first
    )
    texts = {c.text for c in first[1]}
    assert len(texts) > 1  # a state's samples differ from each other
    assert all(c.text.endswith("\n") for cs in first for c in cs if c.finish_reason == "stop")


def test_eval_and_search_take_a_served_model(server: tuple[str, TransformersLM], tmp_path: Path) -> None:
    url, _ = server
    args = ["eval", "--task", "arith", "--limit", "6", "--batch-size", "3"]
    assert main([*args, "--model", url, "--out", str(tmp_path / "served.json")]) == 0
    assert main([*args, "--out", str(tmp_path / "local.json")]) == 0
    served_run = json.loads((tmp_path / "served.json").read_text())
    local_run = json.loads((tmp_path / "local.json").read_text())
    assert served_run["records"] == local_run["records"]
    assert served_run["usage"]["generated_tokens"] == local_run["usage"]["generated_tokens"]
    out = tmp_path / "search.json"
    search = ["search", "--task", "arith", "--model", url, "--limit", "3", "--simulations", "4"]
    assert main([*search, "--rollouts", "1", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert len(results["results"]) == 3 and results["usage"]["policy"]["generated_tokens"] > 0


def test_another_model_served_at_the_same_address_gets_its_own_results(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # vLLM serves one model per port: comparing two means serving one, then the other, at one URL. The
    # results were named, recorded and fingerprinted (a resume's finished batches) by that URL alone, so
    # the second overwrote the first, and a killed run resumed with the other model took the first one's
    # batches. Now the URL is pinned to the model its server holds, and the name says which.
    monkeypatch.chdir(tmp_path)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/v1"
    argv = ["eval", "--task", "arith", "--limit", "3", "--max-tokens", "24", "--model", url]
    search = ["search", "--task", "arith", "--limit", "1", "--simulations", "2", "--rollouts", "1"]
    recorded_rollouts = []
    for name, model in (("arith-base", "arith-base"), ("tiny/random", str(tiny_model_dir))):
        http = make_server(TransformersLM.from_pretrained(model), name, port=port)
        threading.Thread(target=http.serve_forever, daemon=True).start()
        try:
            assert chosen_model(url, "arith") == f"{url}#{name}"
            assert main(argv) == 0
            assert (
                main([*search, "--rollout-model", url, "--out", str(tmp_path / f"{port}-{name[:4]}.json")])
                == 0
            )
            recorded_rollouts.append(json.loads((tmp_path / f"{port}-{name[:4]}.json").read_text()))
        finally:
            http.shutdown()
            http.server_close()
    files = sorted(p.name for p in (tmp_path / "runs" / "eval").glob("*.json"))
    assert files == [
        f"arith-served-127.0.0.1-{port}-arith-base-greedy-tok24-first3.json",
        f"arith-served-127.0.0.1-{port}-tiny-random-greedy-tok24-first3.json",
    ]
    recorded = [json.loads((tmp_path / "runs" / "eval" / f).read_text())["model"] for f in files]
    assert recorded == [f"{url}#arith-base", f"{url}#tiny/random"]
    assert [run["rollout_model"] for run in recorded_rollouts] == recorded  # a served rollout model too


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_served_model_takes_the_chat_template_of_the_tokenizer_named_after_the_hash(
    tiny_chat_model_dir: Path, tmp_path: Path
) -> None:
    http = make_server(
        TransformersLM.from_pretrained(str(tiny_chat_model_dir)), str(tiny_chat_model_dir), port=0
    )
    threading.Thread(target=http.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{http.server_address[1]}#{tiny_chat_model_dir}"
        args = ["eval", "--task", "arith", "--limit", "2", "--max-tokens", "24", "--chat-template"]
        assert main([*args, "--model", url, "--out", str(tmp_path / "served.json")]) == 0
        assert main([*args, "--model", str(tiny_chat_model_dir), "--out", str(tmp_path / "local.json")]) == 0
    finally:
        http.shutdown()
        http.server_close()
    served_run = json.loads((tmp_path / "served.json").read_text())
    local_run = json.loads((tmp_path / "local.json").read_text())
    assert served_run["records"] == local_run["records"]
    assert served_run["usage"]["prefill_tokens"] == local_run["usage"]["prefill_tokens"] > 0


def test_alphallm_serve_prints_its_url_and_serves_until_stopped(tmp_path: Path) -> None:
    # Ctrl-C as a terminal delivers it. A process a non-interactive shell started in the background (a CI
    # job under nohup ... &) inherits SIGINT ignored, and so would the server: it then served on, and the
    # test failed on the job's way of starting, not on the server.
    start = (
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from alphallm.cli import main; sys.exit(main())"
    )
    command = [sys.executable, "-X", "faulthandler", "-c", start]
    command += ["serve", "--model", "arith-base", "--port", "0", "--name", "a"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()  # the first line, once it listens
        match = re.fullmatch(r"serving a at (http://127\.0\.0\.1:\d+/v1) \(Ctrl-C stops\)\n", line)
        assert match, line
        out = tmp_path / "eval.json"
        assert main(["eval", "--task", "arith", "--limit", "2", "--model", match[1], "--out", str(out)]) == 0
        assert json.loads(out.read_text())["model"] == match[1] + "#a"  # the URL and the model it served
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:  # say what the server was doing instead
            os.kill(server.pid, signal.SIGABRT)  # -X faulthandler prints every thread's stack
            _, err = server.communicate(timeout=30)
            pytest.fail(f"the server did not stop within 30 s of Ctrl-C; its stderr:\n{err[-3000:]}")
    assert server.returncode == 130 and "alphallm: interrupted" in server.stderr.read()


def test_served_model_errors_are_one_line(
    server: tuple[str, TransformersLM],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, _ = server
    monkeypatch.setattr(served, "RETRIES", (0.0,))
    with pytest.raises(UserError, match="cannot reach the server"):
        ServedLM("http://127.0.0.1:9")  # the discard port: nothing listens
    with socket.socket() as silent:  # takes connections and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        with pytest.raises(UserError, match=r"no answer within 0.5 s"):
            ServedLM(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.5)
    with pytest.raises(UserError, match="the server holds no model 'nope' \\(it holds: arith-base\\)"):
        ServedLM(url + "#nope")
    assert _post(url, {"model": "nope", "prompt": "1+2=", "max_tokens": 2})[1]["error"]["code"] == 404
    with pytest.raises(UserError, match=r"400: a text of \d+ tokens does not fit"):
        ServedLM(url).sample(["1" * 600], max_tokens=2)
    assert _post(url, {"prompt": "1+1", "max_tokens": 0}) == (
        400,
        {
            "error": {
                "message": "max_tokens must be at least 1 (0 only with echo)",
                "type": "BadRequestError",
                "code": 400,
            }
        },
    )
    with pytest.raises(UserError, match="what trains or reads weights needs a local model"):
        load_causal_lm(url)
    assert _post(url, {"prompt": [1, 2], "max_tokens": 3})[0] == 400
    assert _post(url, {"prompt": "1+1", "n": 0})[0] == 400
    assert _post(url, {"prompt": "1+1", "n": 2, "temperature": 0})[1]["error"]["message"] == (
        "n must be 1 when using greedy sampling, got 2."
    )
    for argv in (
        ["eval", "--task", "arith", "--model", url, "--chat-template", "--limit", "1"],
        ["serve", "--model", "arith-base", "--port", "70000"],
    ):
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("alphallm: error:") and "\n" not in err, err


@pytest.mark.parametrize(
    ("choice", "want"),
    [
        # vLLM: EOS is "stop" with no stop_reason; a stop string left out of the text is put back.
        ({"text": "4=4", "finish_reason": "stop", "stop_reason": None, "token_ids": [7, 2]}, ("4=4", "eos")),
        (
            {"text": "4=4", "finish_reason": "stop", "stop_reason": "\n", "token_ids": [7, 9]},
            ("4=4\n", "stop"),
        ),
        ({"text": "4=4\n", "finish_reason": "stop", "stop_reason": "\n"}, ("4=4\n", "stop")),
        # A server without stop_reason (OpenAI's shape): a text ending with a stop string stopped there.
        ({"text": "4=4\n", "finish_reason": "stop"}, ("4=4\n", "stop")),
        ({"text": "4=4", "finish_reason": "stop"}, ("4=4", "eos")),
        ({"text": "4=", "finish_reason": "length", "stop_reason": None}, ("4=", "length")),
    ],
)
def test_a_reply_in_vllm_or_openai_shape_ends_as_our_completions_do(
    choice: dict[str, Any], want: tuple[str, str]
) -> None:
    logprobs = {"tokens": ["token_id:7", "token_id:9"], "token_logprobs": [-0.5, -1.5]}
    completion = served._completion(choice | {"logprobs": logprobs}, ["\n"])
    assert (completion.text, completion.finish_reason) == want
    assert completion.token_ids == choice.get("token_ids", [7, 9])  # vLLM's token_id:<n> when no ids
    assert completion.logprobs == [-0.5, -1.5]


def test_a_reply_that_ended_otherwise_is_refused_and_odd_tokens_have_no_id() -> None:
    with pytest.raises(UserError, match="finish_reason 'abort'"):
        served._completion({"text": "4=", "finish_reason": "abort"}, ["\n"])
    logprobs = {"tokens": ["token_id:x", "4", "token_id:12"], "token_logprobs": [-1.0, -1.0, -1.0]}
    completion = served._completion({"text": "4=", "finish_reason": "length", "logprobs": logprobs}, [])
    assert completion.token_ids == [-1, -1, 12]
