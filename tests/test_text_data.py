"""`train text`: ShareGPT replies and standard-library source as answers to chat prompts;
`train eval` and `fit --eval-data` on such data."""

import json

import pytest

from redrafter_mlx.training import distill_prompts, text_data
from redrafter_mlx.training.data import load_sequences
from redrafter_mlx.train import main as train_main
from helpers.tiny import tiny_model, write_model_dir

# Words w0..w9 of the tiny tokenizer (it reads w10 as w1 0): w0 EOS, w2 opens a turn, w3 closes one.
TEMPLATE = ("{% for m in messages %}w2 {{ m['content'] }} w3 {% endfor %}"
            "{% if add_generation_prompt %}w2 {% endif %}")


def words(*numbers) -> str:
    return " ".join(f"w{n}" for n in numbers)


def turn(role: str, *numbers) -> dict:
    return {"from": role, "value": words(*numbers)}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = write_model_dir(tmp_path_factory.mktemp("model"), tiny_model())
    config = json.loads((path / "tokenizer_config.json").read_text())
    (path / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": TEMPLATE}))
    return path


REPLY = [4, 5, 6, 7, 8, 9, 4, 5, 6, 7]  # ten tokens: long enough (MIN_ANSWER_TOKENS)
HELD = [8, 9] * 4  # the held-out prompt: long enough (MIN_PROMPT_CHARS)
CONVERSATIONS = [
    {"id": "a_0", "conversations": [turn("human", 4, 5), turn("gpt", *REPLY), turn("human", 6),
                                    turn("gpt", 7, 8)]},  # a too-short reply: skipped
    {"id": "a_4", "conversations": [turn("gpt", *REPLY[::-1]), turn("human", 9), turn("gpt", *REPLY)]},  # a_0's rest
    {"id": "b_0", "conversations": [turn("human", *HELD), turn("gpt", *REPLY)]},  # starts like the held-out one
    {"id": "c_0", "conversations": [turn("human", 6, 7), turn("gpt", *REPLY)]},
    {"id": "d_0", "conversations": [turn("human", *HELD), turn("gpt", 5, *REPLY)]},  # held out (--hold-out 1)
]


STDLIB_FILES = ("json/__init__.py", "json/decoder.py", "os.py", "test/test_os.py", "idlelib/run.py", "x.txt")


def source_words(index: int) -> list:
    return [4 + index] * 10  # each file its own content


@pytest.fixture
def sources(tmp_path):
    sharegpt = tmp_path / "sharegpt.json"
    text = json.dumps(CONVERSATIONS)
    sharegpt.write_text(text[:-1] + ', {"id": "e_0", "conversations": [{"from": "human", "val')  # truncated tail
    stdlib = tmp_path / "stdlib"
    for index, name in enumerate(STDLIB_FILES):
        (stdlib / name).parent.mkdir(parents=True, exist_ok=True)
        (stdlib / name).write_text(words(*source_words(index)) + "\n")
    return sharegpt, stdlib


def run_text(model_dir, out, sharegpt, stdlib, *flags):
    train_main(["text", "--model", str(model_dir), "--out", str(out), "--sharegpt", str(sharegpt),
                "--stdlib", str(stdlib), "--hold-out", "1", *flags])
    return [(s.tolist(), p) for s, p in load_sequences(out)]


def test_replies_and_sources_become_answers_to_chat_prompts(model_dir, sources, tmp_path, monkeypatch):
    monkeypatch.setattr(text_data, "HELD_OUT_EVERY", 3)  # os, the third module, is held out
    sharegpt, stdlib = sources
    out = tmp_path / "data"
    sequences = run_text(model_dir, out, sharegpt, stdlib)
    eot, first = 3, [2, 4, 5, 3, 2]
    before_reversed = [2, 4, 5, 3, 2, *REPLY, 3, 2, 6, 3, 2, 7, 8, 3, 2]
    before_last = before_reversed[:-1] + [2, *REPLY[::-1], 3, 2, 9, 3, 2]
    assert sequences[:4] == [  # the pieces of "a" joined, its short reply skipped; "b" and "d" (held out) absent
        (first + REPLY + [eot], 5),
        (before_reversed + REPLY[::-1] + [eot], 24),
        (before_last + REPLY + [eot], 39),
        ([2, 6, 7, 3, 2] + REPLY + [eot], 5),
    ]
    # json and json.decoder, fenced (``` is the unknown word w1); tests, idlelib and the held-out os absent
    fence = 1
    assert [s[p:] for s, p in sequences[4:]] == [[fence, *source_words(i), fence, eot] for i in (0, 1)]
    assert all(s[:1] == [2] and s[p - 2:p] == [3, 2] for s, p in sequences[4:])
    held = [json.loads(line)["prompt"] for line in (out / "heldout_prompts.jsonl").read_text().splitlines()]
    assert held == [words(*HELD), "Show the source of the Python module `os`."]
    info = json.loads((out / "info.json").read_text())
    assert info["sources"]["sharegpt"] == {"sequences": 4, "answer_tokens": 44, "prompt_tokens": 73}
    assert info["sources"]["stdlib"]["sequences"] == 2


def test_held_out_prompts_never_appear_in_the_shards(model_dir, sources, tmp_path, monkeypatch):
    monkeypatch.setattr(text_data, "HELD_OUT_EVERY", 2)  # json.decoder held out
    sharegpt, stdlib = sources
    sequences = run_text(model_dir, tmp_path / "data", sharegpt, stdlib)
    held = [(2, *HELD, 3), tuple(source_words(1))]  # the held-out conversation's first turn, json.decoder's source
    for sequence, _ in sequences:
        for tokens in held:
            assert tokens not in {tuple(sequence[i:i + len(tokens)]) for i in range(len(sequence))}


def test_a_long_answer_goes_on_in_windows_after_its_context():
    prompt, answer = [1] * 6, list(range(100, 130))
    pairs = text_data.windows(prompt, answer, max_length=16, overlap=4)
    assert pairs[0] == (prompt + answer[:10], 6)
    covered = [t for sequence, prompt_length in pairs for t in sequence[prompt_length:]]
    assert covered == answer  # each answer token is a target exactly once
    assert all(len(s) <= 16 for s, _ in pairs)
    assert all(s[:4] == (prompt + answer)[16 + 12 * i - 4:16 + 12 * i] for i, (s, _) in enumerate(pairs[1:]))
    assert text_data.windows(prompt, answer, max_length=16, overlap=0) == [(prompt + answer[:10], 6)]


def test_a_long_last_turn_keeps_its_end(model_dir):
    from redrafter_mlx.model.load import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    long = [{"role": "user", "content": words(*([4] * 600 + [5, 6]))}]
    prompt = text_data.fit_prompt(tokenizer, long, [602])
    assert len(prompt) <= text_data.MAX_PROMPT_TOKENS and prompt[-5:] == [4, 5, 6, 3, 2]


def test_text_data_resumes_from_its_shards(model_dir, sources, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(text_data, "CONVERSATIONS_PER_SHARD", 1)
    sharegpt, stdlib = sources
    out = tmp_path / "data"
    first = run_text(model_dir, out, sharegpt, stdlib)
    shards = sorted(out.glob("shard-*.npz"))
    assert len(shards) == 3  # conversations a and c, one group of files
    shards[1].unlink()
    stamps = {s: s.stat().st_mtime_ns for s in shards if s.exists()}
    built = []
    original = text_data.sharegpt_sequences
    monkeypatch.setattr(text_data, "sharegpt_sequences", lambda *a: built.append(a[1]) or original(*a))
    assert run_text(model_dir, out, sharegpt, stdlib) == first
    assert len(built) == 1 and {s: s.stat().st_mtime_ns for s in stamps} == stamps  # only the missing one
    capsys.readouterr()
    with pytest.raises(SystemExit):
        run_text(model_dir, out, sharegpt, stdlib, "--overlap", "0")  # would mix shards of two settings
    assert "holds shards made with other settings (overlap 256 -> 0)" in capsys.readouterr().err


def test_max_answer_tokens_stops_starting_shards(model_dir, sources, tmp_path, monkeypatch):
    monkeypatch.setattr(text_data, "CONVERSATIONS_PER_SHARD", 1)
    sharegpt, stdlib = sources
    sequences = run_text(model_dir, tmp_path / "data", sharegpt, stdlib, "--max-answer-tokens", "34")
    assert len(sequences) == 4  # 33 answer tokens after the first shard (a), 44 after the second (c): no stdlib


@pytest.fixture
def trained(model_dir, sources, tmp_path):
    sharegpt, stdlib = sources
    train_data, eval_data = tmp_path / "train", tmp_path / "eval"
    run_text(model_dir, train_data, sharegpt, stdlib)
    eval_data.mkdir()
    from redrafter_mlx.training.data import save_sequences
    save_sequences(eval_data / "shard-00000.npz", [[2, *HELD, 3, 2, 5, *REPLY, 3]], [len(HELD) + 3])
    drafter = tmp_path / "drafter"
    train_main(["fit", "--model", str(model_dir), "--data", str(train_data), "--eval-data", str(eval_data),
                "--out", str(drafter), "--epochs", "2", "--draft-steps", "2", "--save-dtype", "float32"])
    return drafter, train_data, eval_data


def test_fit_evaluates_on_eval_data_and_eval_reports_it(model_dir, trained, capsys):
    drafter, train_data, eval_data = trained
    log = json.loads((drafter / "training.json").read_text())["log"]
    epochs = [entry for entry in log if "epoch" in entry]
    assert [entry["epoch"] for entry in epochs] == [1, 2]
    capsys.readouterr()
    train_main(["eval", "--model", str(model_dir), "--drafter", str(drafter), "--data", str(eval_data),
                "--draft-steps", "2"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["sequences"] == 1 and result["answer_tokens"] == 12
    assert result["top1_per_step"] == epochs[-1]["held_out_top1_per_step"]  # the same sequences as fit's last epoch
    train_main(["eval", "--model", str(model_dir), "--drafter", str(drafter), "--data", str(train_data),
                str(eval_data), "--draft-steps", "2"])
    both = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert both["sequences"] == 1 + len(list(load_sequences(train_data)))
    assert all(0 <= a <= 1 for a in both["top1_per_step"]) and len(both["top1_per_step"]) == 2


def test_distill_prompts_leave_out_the_held_out_set(model_dir, sources, tmp_path, monkeypatch, capsys):
    """Self-distillation prompts: coding prompts less the held-out modules, then the user turns
    of the training conversations, never a held-out conversation's."""
    monkeypatch.setattr(text_data, "HELD_OUT_EVERY", 3)  # os, the third module, is held out
    sharegpt, stdlib = sources
    run_text(model_dir, tmp_path / "data", sharegpt, stdlib)
    skipped = []
    monkeypatch.setattr(distill_prompts, "stdlib_code_prompts", lambda skip, **_: skipped.append(skip) or ["code"])
    monkeypatch.setattr(distill_prompts, "MIN_PROMPT_CHARS", 3)
    out = tmp_path / "prompts.jsonl"
    distill_prompts.main(["--sharegpt", str(sharegpt), "--text-data", str(tmp_path / "data"), "--out", str(out)])
    prompts = [json.loads(line)["prompt"] for line in out.read_text().splitlines()]
    assert skipped == [{"os"}]
    assert prompts[0] == "code" and sorted(prompts[1:]) == sorted([words(4, 5), words(6, 7)])  # "w6", "w9": too short
    with pytest.raises(SystemExit):  # not a `train text` directory
        distill_prompts.main(["--sharegpt", str(sharegpt), "--text-data", str(tmp_path), "--out", str(out)])
    other = tmp_path / "other.json"
    last = {"id": "f_0", "conversations": [turn("human", *[4, 5] * 6), turn("gpt", *REPLY)]}
    other.write_text(json.dumps(CONVERSATIONS + [last]))  # another file: another conversation held out
    before = out.read_text()
    with pytest.raises(SystemExit):
        distill_prompts.main(["--sharegpt", str(other), "--text-data", str(tmp_path / "data"), "--out", str(out)])
    assert "not the file the --text-data directory was made from" in capsys.readouterr().err
    assert out.read_text() == before
    newer = tmp_path / "newer.jsonl"  # --exclude: only prompts no earlier file had
    earlier = tmp_path / "earlier.jsonl"
    earlier.write_text(json.dumps({"prompt": prompts[1]}) + "\n" + json.dumps({"prompt": "code"}) + "\n")
    distill_prompts.main(["--sharegpt", str(sharegpt), "--text-data", str(tmp_path / "data"), "--out", str(newer),
                          "--exclude", str(earlier)])
    assert [json.loads(line)["prompt"] for line in newer.read_text().splitlines()] == prompts[2:]


def test_code_prompts_skip_modules(monkeypatch):
    from redrafter_mlx.training import code_prompts

    monkeypatch.setattr(code_prompts, "MODULES", ("os.path",))
    path_only = code_prompts.stdlib_code_prompts()
    monkeypatch.setattr(code_prompts, "MODULES", ("textwrap", "os.path"))
    alone = code_prompts.stdlib_code_prompts()
    assert path_only and len(alone) > len(path_only)
    assert code_prompts.stdlib_code_prompts(skip={"textwrap"}) == path_only
    assert code_prompts.stdlib_code_prompts(skip={"posixpath"}) == alone[:len(alone) - len(path_only)]  # os.path's name


def test_code_prompts_of_every_module_in_every_form(monkeypatch):
    """--all-modules walks packages into their public submodules and leaves out private modules
    and EXCLUDED ones (`this` prints when imported); --every-form gives functions three prompts,
    classes two, the one a hash picks among them."""
    from redrafter_mlx.training import code_prompts

    monkeypatch.setattr(code_prompts.sys, "stdlib_module_names", frozenset({"json", "textwrap", "this", "_json"}))
    assert code_prompts.all_modules() == ["json", "json.decoder", "json.encoder", "json.scanner", "json.tool",
                                          "textwrap"]
    monkeypatch.setattr(code_prompts.sys, "stdlib_module_names", frozenset({"unittest", "distutils"}))
    with_tests = code_prompts.all_modules()  # unittest.test (Python < 3.12) and setuptools' distutils left out
    assert "unittest.case" in with_tests and not any(part.startswith("test") for m in with_tests for part in m.split("."))
    assert not any(m.startswith("distutils") for m in with_tests)
    import textwrap
    one = code_prompts.prompts_for("textwrap.dedent", textwrap.dedent, every_form=False)
    every = code_prompts.prompts_for("textwrap.dedent", textwrap.dedent, every_form=True)
    assert len(every) == 3 and one[0] in every and every[1].startswith("def dedent(text):")
    assert len(code_prompts.prompts_for("textwrap.TextWrapper", textwrap.TextWrapper, every_form=True)) == 2
    monkeypatch.setattr(code_prompts, "MODULES", ("textwrap",))
    listed = code_prompts.stdlib_code_prompts(every_form=True)
    assert set(code_prompts.stdlib_code_prompts()) < set(listed)
    monkeypatch.setattr(code_prompts.sys, "stdlib_module_names", frozenset({"json", "textwrap"}))
    assert set(listed) < set(code_prompts.stdlib_code_prompts(all_stdlib=True, every_form=True))  # json's too


def test_code_prompt_signatures_leave_out_memory_addresses():
    from redrafter_mlx.training.code_prompts import signature

    def f(x=object(), *, g=print):
        pass

    assert signature(f) == "(x=<object object>, *, g=<built-in function print>)"  # the same text in every run


def test_text_and_eval_take_the_model_as_every_command_does(model_dir, sources, tmp_path, monkeypatch):
    """A Hugging Face repo id (here one found in the local cache) names the target of `text`
    and `eval` as it does for `data`, `fit` and `generate`."""
    from redrafter_mlx import models

    monkeypatch.setattr(models, "hub_snapshot", lambda repo: model_dir if repo == "org/tiny" else None)
    sharegpt, stdlib = sources
    out = tmp_path / "data"
    train_main(["text", "--model", "org/tiny", "--out", str(out), "--sharegpt", str(sharegpt), "--stdlib", str(stdlib),
                "--hold-out", "1"])
    train_main(["fit", "--model", "org/tiny", "--data", str(out), "--out", str(tmp_path / "drafter"),
                "--epochs", "1", "--batch-tokens", "256"])
    train_main(["eval", "--model", "org/tiny", "--drafter", str(tmp_path / "drafter"), "--data", str(out)])
