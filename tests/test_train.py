"""Drafter training: target alignment of the K-step loss, batching/masking, a tiny run."""

import json
import shutil

import mlx.core as mx
import numpy as np
import pytest

from redrafter_mlx.model import fingerprint
from redrafter_mlx.training.batch_generate import generate_batch
from redrafter_mlx.decode.beam_search import BeamShape
from redrafter_mlx.training.data import load_sequences, make_batches, read_prompts, save_sequences, sharegpt_prompts, split_by_prompt
from redrafter_mlx.decode import generate_ar, generate_redrafter
from redrafter_mlx.training.loss import drafter_loss, step_logits, target_features, target_next_probs
from redrafter_mlx.errors import UsageError
from redrafter_mlx.model.load import LoadError, load_drafter, load_model
from redrafter_mlx.policy import CPU, GPU, DecodePolicy
from redrafter_mlx.decode.sampling import SamplingParams
from redrafter_mlx.train import main as train_main
from redrafter_mlx.training.fit import ranked_answer_tokens
from redrafter_mlx.training.grow import grow
from helpers.stats_check import chi2_goodness_of_fit
from helpers.tiny import tiny_drafter, tiny_model, write_model_dir


def test_make_batches_pads_and_masks_answers():
    sequences = [(np.array([5, 6, 7, 8, 9]), 2), (np.array([1, 2, 3]), 1), (np.array([4, 4, 4, 4, 4, 4, 4]), 6)]
    batches = list(make_batches(sequences, batch_tokens=20, max_length=6, rng=np.random.default_rng(0), bucket=4))
    assert sorted(t.shape for t, _ in batches) == [(3, 6), (5, 4)]  # rows per width: 20 // width
    rows = {tuple(r[r > 0]): (r, m) for tokens, mask in batches for r, m in zip(tokens, mask) if r.any()}
    assert rows[(1, 2, 3)][1].tolist() == [False, True, True, False]
    rows = {k: v for k, v in rows.items() if len(v[0]) == 6}
    assert rows[(5, 6, 7, 8, 9)][1].tolist() == [False, False, True, True, True, False]
    assert rows[(4, 4, 4, 4, 4, 4)][1].tolist() == [False] * 6  # truncated to max_length: no answer left


def test_sharegpt_prompts_first_turns_then_later_turns(tmp_path):
    conversations = [
        {"conversations": [{"from": "human", "value": " A "}, {"from": "gpt", "value": "x"},
                           {"from": "human", "value": "B"}, {"from": "human", "value": "continue"}]},
        {"conversations": [{"from": "gpt", "value": "starts with the model"}, {"from": "human", "value": "Z"}]},
        {"conversations": [{"from": "human", "value": "C"}, {"from": "human", "value": "continue"}]},
    ]
    text = json.dumps(conversations)
    path = tmp_path / "sharegpt.json"
    path.write_text(text[:-1] + ', {"conversations": [{"from": "human", "value": "trunc')  # truncated tail
    assert sharegpt_prompts(path, 10) == ["A", "C"]
    assert sharegpt_prompts(path, 10, all_turns=True) == ["A", "C", "B", "continue"]
    assert sharegpt_prompts(path, 3, all_turns=True) == ["A", "C", "B"]


def test_prompts_from_jsonl_and_from_the_standard_library(tmp_path):
    from redrafter_mlx.training.code_prompts import stdlib_code_prompts

    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "a"}\n\n{"prompt": "b"}\n{"prompt": "a"}\n{"prompt": "c"}\n')
    assert read_prompts(path, 10) == ["a", "b", "c"] and read_prompts(path, 2) == ["a", "b"]
    code = stdlib_code_prompts()
    assert len(code) > 1000 and len(set(code)) == len(code)
    assert any(p.startswith("def ") for p in code) and any(p.startswith("Write a Python") for p in code)
    assert any("```python" in p for p in code)


def test_ranked_answer_tokens_count_answers_only():
    sequences = [(np.array([7, 7, 7, 1, 2, 2]), 3), (np.array([7, 2, 3]), 1)]
    assert ranked_answer_tokens(sequences, vocab_size=8) == [2, 1, 3, 0, 4, 5, 6, 7]


def test_save_and_load_sequences(tmp_path):
    save_sequences(tmp_path / "shard-00000.npz", [[1, 2, 3], [4, 5]], [1, 2])
    sequences = list(load_sequences(tmp_path))
    assert [(s.tolist(), p) for s, p in sequences] == [([1, 2, 3], 1), ([4, 5], 2)]
    assert sequences[0][0].base is sequences[1][0].base  # one copy of the shard, not one per sequence


def test_save_and_load_sequences_from_several_directories(tmp_path):
    for name, sequences in (("a", [[1, 2, 3]]), ("b", [[4, 5], [6, 7, 8]])):
        (tmp_path / name).mkdir()
        save_sequences(tmp_path / name / "shard-00000.npz", sequences, [1] * len(sequences))
    loaded = list(load_sequences(tmp_path / "a", tmp_path / "b"))
    assert [s.tolist() for s, _ in loaded] == [[1, 2, 3], [4, 5], [6, 7, 8]]
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="empty"):
        list(load_sequences(tmp_path / "a", tmp_path / "empty"))


def test_split_by_prompt_keeps_all_answers_to_a_prompt_on_one_side():
    rng = np.random.default_rng(0)
    prompts = [rng.integers(0, 1000, size=4) for _ in range(200)]
    sequences = [(np.concatenate([p, rng.integers(0, 1000, size=3)]), 4) for p in prompts for _ in range(3)]
    train, held_out = split_by_prompt(sequences, 0.1)
    assert len(train) + len(held_out) == 600
    held_prompts = {tuple(s[:4]) for s, _ in held_out}
    assert len(held_prompts) == 20 and len(held_out) == 60  # 10% of the prompts, all three answers of each
    assert not held_prompts & {tuple(s[:4]) for s, _ in train}
    assert len(split_by_prompt(sequences[:3], 0.02)[1]) == 3  # at least one prompt held out


def test_sampled_batch_answers_follow_the_tempered_distribution():
    model = tiny_model(0, "llama", vocab=16)
    prompt, temp = [3, 1, 4], 0.7
    logits = model.logits(model(mx.array([prompt]), mx.arange(3)[None], model.new_cache())[:, -1])[0]
    probs = np.exp(np.array(logits, np.float64) / temp)
    mx.random.seed(5)
    answers = generate_batch(model, [prompt] * 2000, 2, eos_ids=set(), params=SamplingParams(temp))
    first = np.bincount([a[0] for a in answers], minlength=16)
    assert chi2_goodness_of_fit(first, probs) > 1e-3
    assert len({tuple(a) for a in answers}) > 3  # different answers to one prompt
    mx.random.seed(5)
    assert generate_batch(model, [prompt] * 2000, 2, eos_ids=set(), params=SamplingParams(temp)) == answers


@pytest.mark.parametrize("head", ["own", "target"])
def test_step_logits_read_the_right_tokens(head):
    """Step i at position t: context h_t, RNN over tokens t+1..t+1+i; predicts token t+2+i."""
    model = tiny_model(0, vocab=16)
    drafter = tiny_drafter(model, 1, head=head)
    tokens = mx.array([[3, 1, 4, 1, 5, 9, 2, 6]])
    hidden, embeddings = target_features(model, tokens)
    for i, logits in step_logits(drafter, hidden, embeddings, steps=3):
        for t in range(logits.shape[1]):
            state = mx.zeros((32,))
            for j in range(i + 1):
                state = drafter.next_state(state, model.embed(tokens[0, t + 1 + j]))
            expected = drafter(hidden[0, t], state)
            np.testing.assert_allclose(np.array(logits[0, t]), np.array(expected), atol=1e-4, rtol=1e-4)
    _, losses, _, counts = drafter_loss(drafter, hidden, embeddings, tokens, mx.ones(tokens.shape, mx.bool_), 3)
    assert counts.tolist() == [6, 5, 4]  # targets t+2+i inside the sequence


def test_reduced_vocab_loss_scores_only_its_tokens():
    """With a draft vocabulary, the softmax runs over its tokens; other targets are left out of
    the loss and count as misses."""
    model = tiny_model(0, vocab=16)
    drafter = tiny_drafter(model, 1, head="own")
    tokens = mx.array([[3, 1, 4, 1, 5, 9, 2, 6]])  # step 0 targets: 4 1 5 9 2 6
    hidden, embeddings = target_features(model, tokens)
    full_logits = next(step_logits(drafter, hidden, embeddings, 1))[1]
    kept = mx.array([1, 2, 4, 5])
    drafter.restrict_vocab(kept)
    _, losses, accuracy, counts = drafter_loss(drafter, hidden, embeddings, tokens, mx.ones(tokens.shape, mx.bool_), 1)
    logits = np.array(full_logits[0][:, kept.tolist()], dtype=np.float64)
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    targets = {4: 2, 1: 0, 5: 3, 2: 1}  # token -> index in kept
    expected = [-log_softmax[t, targets[tok]] for t, tok in enumerate([4, 1, 5, 9, 2, 6]) if tok in targets]
    assert losses.item() == pytest.approx(np.mean(expected), rel=1e-4)
    hits = [tok in targets and logits[t].argmax() == targets[tok] for t, tok in enumerate([4, 1, 5, 9, 2, 6])]
    assert counts.tolist() == [6] and accuracy.item() == pytest.approx(np.mean(hits))


def test_soft_loss_reads_the_targets_view_of_each_drafted_token():
    """Soft targets that put all mass on the data's next token give exactly the hard loss:
    step i at position t must read the target's distribution for token t+2+i."""
    model = tiny_model(0, vocab=16)
    drafter = tiny_drafter(model, 1, head="own")
    tokens = mx.array([[3, 1, 4, 1, 5, 9, 2, 6], [2, 7, 1, 8, 2, 8, 1, 8]])
    mask = mx.broadcast_to(mx.arange(8) >= 3, tokens.shape)  # answers from position 3 on
    hidden, embeddings = target_features(model, tokens)
    one_hot = np.zeros((2, 8, 16), dtype=np.float32)
    for b in range(2):
        for t in range(7):
            one_hot[b, t, tokens[b, t + 1].item()] = 1.0
    hard = drafter_loss(drafter, hidden, embeddings, tokens, mask, 3)[1]
    soft = drafter_loss(drafter, hidden, embeddings, tokens, mask, 3, mx.array(one_hot), distill=1.0)[1]
    np.testing.assert_allclose(np.array(soft), np.array(hard), rtol=1e-5)
    blend = drafter_loss(drafter, hidden, embeddings, tokens, mask, 3, mx.array(one_hot) * 0, distill=0.25)[1]
    np.testing.assert_allclose(np.array(blend), 0.75 * np.array(hard), rtol=1e-5)


def test_step_decay_weighs_the_early_steps_more():
    """--step-decay d: the total is sum_i w_i * loss_i with w_i = d ** i rescaled to sum to K;
    the per-step losses themselves do not change."""
    model = tiny_model(0, vocab=16)
    drafter = tiny_drafter(model, 1, head="own")
    tokens = mx.array([[3, 1, 4, 1, 5, 9, 2, 6]])
    hidden, embeddings = target_features(model, tokens)
    mask = mx.ones(tokens.shape, mx.bool_)
    total, losses = drafter_loss(drafter, hidden, embeddings, tokens, mask, 3)[:2]
    decayed, decayed_losses = drafter_loss(drafter, hidden, embeddings, tokens, mask, 3, step_decay=0.5)[:2]
    np.testing.assert_allclose(np.array(decayed_losses), np.array(losses), rtol=1e-6)
    weights = np.array([1, 0.5, 0.25]) * 3 / 1.75
    assert total.item() == pytest.approx(float(np.array(losses).sum()), rel=1e-5)
    assert decayed.item() == pytest.approx(float((weights * np.array(losses)).sum()), rel=1e-5)
    assert decayed.item() != pytest.approx(total.item(), rel=1e-3)


def test_target_next_probs_over_the_draft_vocabulary():
    model = tiny_model(0, vocab=16)
    drafter = tiny_drafter(model, 1, head="target")
    kept = mx.array([1, 2, 4, 5])
    drafter.restrict_vocab(kept)
    hidden, _ = target_features(model, mx.array([[3, 1, 4, 1, 5]]))
    logits = np.array(model.logits(hidden), dtype=np.float64)
    expected = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(np.array(target_next_probs(model, hidden, drafter)), expected[..., [1, 2, 4, 5]],
                               rtol=1e-4, atol=1e-6)


def fit_and_check_it_learns(model_dir, data, out, *options):
    """4 epochs of `fit` with `options`: the training loss falls and held-out accuracy rises."""
    train_main(["fit", "--model", str(model_dir), "--data", str(data), "--out", str(out), "--epochs", "4",
                "--batch-tokens", "512", "--lr", "1e-2", "--log-every", "2", "--eval-fraction", "0.1", *options])
    log = json.loads((out / "training.json").read_text())["log"]
    losses = [entry["loss"] for entry in log if "loss" in entry]
    accuracy = [entry["held_out_top1_per_step"] for entry in log if "epoch" in entry]
    assert losses[-1] < 0.8 * losses[0], losses
    assert accuracy[-1][0] > accuracy[0][0], accuracy


def test_distilled_training_on_float16_features_learns(tmp_path):
    model_dir, data, _, _ = self_distilled_data(tmp_path, seed=2, num_prompts=128, new_tokens=16)
    out = tmp_path / "drafter"
    fit_and_check_it_learns(model_dir, data, out, "--distill", "0.5", "--dtype", "float16")
    with pytest.raises(SystemExit):
        train_main(["fit", "--model", str(model_dir), "--data", str(data), "--out", str(out), "--distill", "1.5"])


def self_distilled_data(tmp_path, seed: int, num_prompts: int, new_tokens: int):
    """A tiny model's directory and a data directory of its greedy answers to random prompts."""
    model = tiny_model(0, "llama", vocab=16)
    model_dir = write_model_dir(tmp_path / "model", model)
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(1, 16, size=rng.integers(2, 6)).tolist() for _ in range(num_prompts)]
    answers = generate_batch(model, prompts, new_tokens, eos_ids=set())
    data = tmp_path / "data"
    data.mkdir()
    save_sequences(data / "shard-00000.npz", [p + a for p, a in zip(prompts, answers)], [len(p) for p in prompts])
    return model_dir, data, prompts, answers


def test_own_head_trained_on_a_draft_vocabulary_holds_its_rows_only(tmp_path):
    model_dir, data, prompts, _ = self_distilled_data(tmp_path, seed=1, num_prompts=64, new_tokens=16)
    sampled = tmp_path / "sampled"  # more answers to the same prompts, in a second directory
    sampled.mkdir()
    answers = generate_batch(load_model(model_dir), prompts, 16, eos_ids=set(), params=SamplingParams(1.0))
    save_sequences(sampled / "shard-00000.npz", [p + a for p, a in zip(prompts, answers)], [len(p) for p in prompts])
    out = tmp_path / "drafter"
    train_main(["fit", "--model", str(model_dir), "--data", str(data), str(sampled), "--out", str(out),
                "--epochs", "1", "--batch-tokens", "512", "--head", "own", "--draft-vocab", "8",
                "--save-dtype", "float32"])
    assert json.loads((out / "training.json").read_text())["args"]["data"] == [str(data), str(sampled)]
    assert fingerprint.trained_for(out) == fingerprint.fingerprint(model_dir)  # it finds its model in any form
    config = json.loads((out / "config.json").read_text())
    assert config["draft_vocab_size"] == 8 and config["head_rows"] == 8
    head = mx.load(str(out / "model.safetensors"))["lm_head.2.weight"]
    assert head.shape == (8, 64)
    loaded = load_model(model_dir)
    drafter = load_drafter(out, loaded)
    assert drafter.draft_vocab_size == 8
    with pytest.raises(LoadError, match="only its 8-token draft vocabulary"):
        load_drafter(out, loaded, draft_vocab=0)
    ar = sum(generate_ar(loaded, prompts[0], max_tokens=20), [])
    assert sum(generate_redrafter(loaded, drafter, prompts[0], max_tokens=20, beam=BeamShape(2, 3)), []) == ar


def test_a_drafter_keeps_its_rows_on_a_form_of_its_model_with_other_eos_ids(tmp_path):
    """An own head of K rows holds the K most frequent answer tokens plus the EOS ids of the
    model it was trained on; draft_vocab.json records them, so that a form of that model
    listing other EOS ids (a GGUF of a Llama 3 checkpoint: one of its three) reads the same
    rows as the same tokens."""
    model_dir, data, _, _ = self_distilled_data(tmp_path, seed=5, num_prompts=64, new_tokens=12)
    eos = ranked_answer_tokens(load_sequences(data), 16)[8]  # not among the 8 most frequent
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "eos_token_id": eos}))
    other = shutil.copytree(model_dir, tmp_path / "other_form")
    (other / "config.json").write_text(json.dumps({**config, "eos_token_id": None}))
    out = tmp_path / "drafter"
    fit_losses(model_dir, data, out, "--head", "own", "--draft-vocab", "8")
    rows = [np.array(load_drafter(out, load_model(d)).draft_tokens).tolist() for d in (model_dir, other)]
    assert eos in rows[0] and rows[1] == rows[0]


def test_tiny_training_run_learns_and_decodes(tmp_path):
    model_dir, data, prompts, answers = self_distilled_data(tmp_path, seed=0, num_prompts=256, new_tokens=24)
    out = tmp_path / "drafter"
    train_main(["fit", "--model", str(model_dir), "--data", str(data), "--out", str(out), "--epochs", "10",
                "--batch-tokens", "512", "--lr", "1e-2", "--log-every", "5", "--eval-fraction", "0.05",
                "--save-dtype", "float32"])
    log = json.loads((out / "training.json").read_text())["log"]
    losses = [entry["loss"] for entry in log if "loss" in entry]
    accuracy = [entry["held_out_top1_per_step"] for entry in log if "epoch" in entry]
    assert losses[-1] < 0.7 * losses[0], losses
    assert accuracy[-1][0] > accuracy[0][0] and accuracy[-1][0] > 0.3, accuracy
    assert json.loads((out / "config.json").read_text())["draft_vocab_size"] == 0  # default 4096 >= vocab: all
    ranked = json.loads((out / "draft_vocab.json").read_text())["token_ids"]
    answer_counts = np.bincount(sum(answers, []), minlength=16)
    assert sorted(ranked) == list(range(16)) and answer_counts[ranked[0]] >= np.sort(answer_counts)[-2]
    loaded = load_model(model_dir)
    drafter = load_drafter(out, loaded)
    prompt = prompts[0]
    ar = sum(generate_ar(loaded, prompt, max_tokens=24), [])
    assert sum(generate_redrafter(loaded, drafter, prompt, max_tokens=24, beam=BeamShape(2, 4)), []) == ar


def test_checkpoint_round_trip(tmp_path):
    import mlx.optimizers as optim
    from mlx.utils import tree_flatten

    from redrafter_mlx.training.fit import load_checkpoint, save_checkpoint

    model = tiny_model(0, vocab=16)
    drafter, fresh = tiny_drafter(model, 1, head="target"), tiny_drafter(model, 2, head="target")
    optimizer = optim.AdamW(learning_rate=1e-3)
    optimizer.init(drafter.trainable_parameters())
    save_checkpoint(tmp_path / "ckpt", drafter, optimizer, step=17)
    restored = optim.AdamW(learning_rate=1e-3)
    assert load_checkpoint(tmp_path / "ckpt", fresh, restored) == (17, [])
    for (name, a), (_, b) in zip(tree_flatten(drafter.parameters()), tree_flatten(fresh.parameters())):
        np.testing.assert_array_equal(np.array(a), np.array(b), err_msg=name)
    assert set(dict(tree_flatten(restored.state))) == set(dict(tree_flatten(optimizer.state)))


def test_interrupted_fit_resumes_to_the_same_drafter(tmp_path, monkeypatch, capfd):
    import redrafter_mlx.training.fit as train

    model_dir, data, _, _ = self_distilled_data(tmp_path, seed=3, num_prompts=64, new_tokens=12)

    def fit(out, *extra):
        train_main(["fit", "--model", str(model_dir), "--data", str(data), "--out", str(out), "--epochs", "2",
                    "--batch-tokens", "256", "--log-every", "1", "--checkpoint-every", "1",
                    "--save-dtype", "float32", *extra])

    fit(tmp_path / "straight")
    evaluate = train.evaluate

    def interrupted(*args):  # the machine goes away at the end of epoch 1, after its last checkpoint
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "evaluate", interrupted)
    with pytest.raises(SystemExit):  # the command line exits 130 on an interrupt
        fit(tmp_path / "resumed")
    assert (tmp_path / "resumed.checkpoint").is_dir() and not (tmp_path / "resumed").exists()
    monkeypatch.setattr(train, "evaluate", evaluate)
    with pytest.raises(SystemExit) as refused:  # a checkpoint of other settings is refused in one line
        fit(tmp_path / "resumed", "--resume", "--layers", "3")
    assert refused.value.code == 2 and "holds a drafter with other settings (num_draft_layers)" in capfd.readouterr().err
    fit(tmp_path / "resumed", "--resume")
    straight, resumed = (mx.load(str(tmp_path / d / "model.safetensors")) for d in ("straight", "resumed"))
    for name in straight:
        np.testing.assert_array_equal(np.array(straight[name]), np.array(resumed[name]), err_msg=name)
    logs = [json.loads((tmp_path / d / "training.json").read_text())["log"] for d in ("straight", "resumed")]
    epochs = [[entry["epoch"] for entry in log if "epoch" in entry] for log in logs]
    assert epochs == [[1, 2], [2]]  # epoch 1's accuracy was never computed in the interrupted run
    assert [e["step"] for e in logs[1] if "loss" in e] == [e["step"] for e in logs[0] if "loss" in e]


def fit_losses(model_dir, data, out, *extra) -> list:
    """Fits a drafter to `out` (2 epochs of batches of 512 tokens, lr 1e-2, float32) -> its logged losses."""
    train_main(["fit", "--model", str(model_dir), "--data", str(data), "--out", str(out), "--epochs", "2",
                "--batch-tokens", "512", "--lr", "1e-2", "--log-every", "1", "--save-dtype", "float32", *extra])
    log = json.loads((out / "training.json").read_text())["log"]
    return [entry["loss"] for entry in log if "loss" in entry]


def test_fit_goes_on_from_a_trained_drafter(tmp_path):
    model_dir, data, prompts, _ = self_distilled_data(tmp_path, seed=4, num_prompts=128, new_tokens=16)

    def fit(out, *extra):
        return fit_losses(model_dir, data, out, *extra)

    first = fit(tmp_path / "first", "--head", "own", "--layers", "2", "--draft-vocab", "8")
    shutil.copytree(data, tmp_path / "other_data")  # the vocabulary's source names the first run's data
    further = fit(tmp_path / "further", "--init", str(tmp_path / "first"), "--layers", "1", "--draft-vocab", "0",
                  "--data", str(tmp_path / "other_data"))
    assert further[0] < 0.8 * first[0], (first, further)  # starts near where the first run ended
    for name in ("config.json", "draft_vocab.json"):  # the init's architecture and draft vocabulary
        assert (tmp_path / "further" / name).read_text() == (tmp_path / "first" / name).read_text(), name
    loaded = load_model(model_dir)
    drafter = load_drafter(tmp_path / "further", loaded)
    ar = sum(generate_ar(loaded, prompts[0], max_tokens=16), [])
    assert sum(generate_redrafter(loaded, drafter, prompts[0], max_tokens=16, beam=BeamShape(2, 3)), []) == ar
    with pytest.raises(SystemExit):  # main() reports the LoadError
        fit(tmp_path / "none", "--init", str(tmp_path / "missing"))
    assert not (tmp_path / "none").exists()


def test_fit_goes_on_from_a_drafter_of_all_tokens_without_a_draft_vocabulary(tmp_path):
    """A drafter that scores every token needs no draft_vocab.json (Apple's, converted): fit
    goes on from it and ranks the answer tokens of its data, as a fresh fit does."""
    model_dir, data, _, _ = self_distilled_data(tmp_path, seed=6, num_prompts=64, new_tokens=12)
    fit_losses(model_dir, data, tmp_path / "first", "--draft-vocab", "0")
    fresh = json.loads((tmp_path / "first" / "draft_vocab.json").read_text())["token_ids"]
    (tmp_path / "first" / "draft_vocab.json").unlink()
    fit_losses(model_dir, data, tmp_path / "further", "--init", str(tmp_path / "first"))
    assert json.loads((tmp_path / "further" / "draft_vocab.json").read_text())["token_ids"] == fresh
    load_drafter(tmp_path / "further", load_model(model_dir), draft_vocab=4)  # --draft-vocab works on it


def test_fit_trains_the_quantized_head_it_goes_on_from(tmp_path, monkeypatch):
    """--init from a drafter whose head is 4-bit (kept quantized when loaded on GPUs): the head
    is trained too (made dense, quantized again by --head-bits), not left frozen."""
    model_dir, data, _, _ = self_distilled_data(tmp_path, seed=5, num_prompts=64, new_tokens=16)

    def fit(out, *extra):
        train_main(["fit", "--model", str(model_dir), "--data", str(data), "--out", str(out), "--epochs", "1",
                    "--batch-tokens", "512", "--lr", "1e-2", "--head-bits", "4", "--draft-vocab", "8", *extra])

    fit(tmp_path / "first")
    monkeypatch.setattr(DecodePolicy, "for_device", classmethod(lambda cls, device=None: GPU))  # heads stay 4-bit
    fit(tmp_path / "further", "--init", str(tmp_path / "first"))
    heads = [mx.load(str(tmp_path / d / "model.safetensors"))["lm_head.2.weight"] for d in ("first", "further")]
    assert heads[0].dtype == heads[1].dtype == mx.uint32  # saved quantized
    assert not mx.array_equal(heads[0], heads[1])


@pytest.mark.parametrize("exit_dim, old_layers, new_layers, head", [
    (40, (), (1,), "own"),      # input_proj widened by zero columns
    (None, (), (0, 1), "own"),  # Apple's layout: an input_proj that passes the old inputs through
    (40, (1,), (0, 1), "own"),  # a layer read before another one added: the columns move
    (None, (), (), "target"),   # ResBlocks only
    (None, (), (0,), "target"),  # the target's head: input_proj (2H -> H) widened
])
def test_grown_drafter_drafts_as_the_one_it_grew_from(exit_dim, old_layers, new_layers, head):
    """grow: one more ResBlock and more target layers read, yet the same logits on every input
    (the old drafter reading only its own layers' features)."""
    model = tiny_model(0, vocab=16)
    old = tiny_drafter(model, 2, exit_dim=exit_dim, layers=1, head=head, context_layers=old_layers)
    old.restrict_vocab(mx.array([1, 2, 4, 5, 7]))
    new = grow(old, model, layers=2, context_layers=new_layers)
    assert new.config.num_draft_layers == 2 and new.taps == tuple(sorted(set(old_layers) | set(new_layers)))
    tokens = mx.array([[3, 1, 4, 1, 5, 9, 2, 6]])
    features_new, embeddings = target_features(model, tokens, new.taps)
    features_old, _ = target_features(model, tokens, old.taps)
    for (_, a), (_, b) in zip(step_logits(old, features_old, embeddings, 3), step_logits(new, features_new, embeddings, 3)):
        np.testing.assert_allclose(np.array(b), np.array(a), atol=1e-5, rtol=1e-5)
    assert not new.lm_head[1].linear.weight.any().item()  # the added block: zero, trainable


def test_fit_grows_a_trained_drafter(tmp_path):
    """fit --init DIR --grow: the saved drafter has the added ResBlock and layer, starts from the
    init's loss (not a fresh drafter's) and decodes exactly as AR; fit --step-decay reaches the loss."""
    model_dir, data, prompts, _ = self_distilled_data(tmp_path, seed=6, num_prompts=128, new_tokens=16)

    def fit(out, *extra):
        return fit_losses(model_dir, data, out, *extra)

    first = fit(tmp_path / "first", "--layers", "1", "--draft-vocab", "8")
    grown = fit(tmp_path / "grown", "--init", str(tmp_path / "first"), "--grow", "--layers", "2",
                "--context-layers", "0")
    assert grown[0] < 0.8 * first[0], (first, grown)
    config = json.loads((tmp_path / "grown" / "config.json").read_text())
    assert (config["num_draft_layers"], config["context_layers"]) == (2, [0])
    loaded = load_model(model_dir)
    drafter = load_drafter(tmp_path / "grown", loaded)
    ar = sum(generate_ar(loaded, prompts[0], max_tokens=16), [])
    assert sum(generate_redrafter(loaded, drafter, prompts[0], max_tokens=16, beam=BeamShape(2, 3)), []) == ar

    decayed = fit(tmp_path / "decayed", "--init", str(tmp_path / "first"), "--step-decay", "0.5")
    undecayed = fit(tmp_path / "undecayed", "--init", str(tmp_path / "first"))
    assert decayed[0] != pytest.approx(undecayed[0], rel=1e-3)  # the flag reaches the loss


def test_drafter_reading_context_layers_trains_saves_and_decodes(tmp_path, capsys):
    model_dir, data, prompts, _ = self_distilled_data(tmp_path, seed=3, num_prompts=128, new_tokens=16)
    out = tmp_path / "drafter"
    fit_and_check_it_learns(model_dir, data, out, "--context-layers", "0", "--save-dtype", "float32")
    assert json.loads((out / "config.json").read_text())["context_layers"] == [0]
    assert mx.load(str(out / "model.safetensors"))["input_proj.weight"].shape == (64, 96)  # (2H, 2H + H)
    loaded = load_model(model_dir)
    drafter = load_drafter(out, loaded)
    ar = sum(generate_ar(loaded, prompts[0], max_tokens=20), [])
    assert sum(generate_redrafter(loaded, drafter, prompts[0], max_tokens=20, beam=BeamShape(2, 3)), []) == ar
    for bad in ("2", "1,0", "x"):  # the tiny model has layers 0 and 1
        with pytest.raises(SystemExit):
            train_main(["fit", "--model", str(model_dir), "--data", str(data), "--out", str(tmp_path / "bad"),
                        "--context-layers", bad])
        assert "context_layers" in capsys.readouterr().err or bad == "x"
    assert not (tmp_path / "bad").exists()


def test_also_fits_each_variant_as_if_fitted_alone(tmp_path):
    """--also shares the target's features between drafters; each comes out as fitted on its own."""
    model_dir, data, prompts, _ = self_distilled_data(tmp_path, seed=5, num_prompts=64, new_tokens=12)
    common = ["--model", str(model_dir), "--data", str(data), "--epochs", "2", "--batch-tokens", "256",
              "--distill", "0.5", "--save-dtype", "float32"]
    own, target, quantized, alone = (tmp_path / name for name in ("own", "target", "quantized", "alone"))
    train_main(["fit", *common, "--out", str(own), "--also", f"out={target},head=target,draft_vocab=8",
                "--also", f"out={quantized},exit_dim=128,head_bits=4"])
    train_main(["fit", *common, "--out", str(alone), "--head", "target", "--draft-vocab", "8"])
    shared, single = (mx.load(str(d / "model.safetensors")) for d in (target, alone))
    assert set(shared) == set(single)
    for name in single:
        np.testing.assert_array_equal(np.array(shared[name]), np.array(single[name]), err_msg=name)
    config = json.loads((quantized / "config.json").read_text())
    assert config["exit_dim"] == 128 and config["quantization"] == {"group_size": 64, "bits": 4}
    log = json.loads((quantized / "training.json").read_text())["log"]
    assert [e["head_bits"] for e in log if "head_bits" in e] == [4]
    model = load_model(model_dir)
    drafter, dense = load_drafter(quantized, model, policy=GPU), load_drafter(quantized, model, policy=CPU)
    assert "scales" in drafter.lm_head[-1] and "input_proj" in drafter
    assert "scales" not in dense.lm_head[-1]  # CPUs: the quantized head made dense when loaded
    context, state = mx.random.normal((3, 32)), mx.random.normal((3, 32))
    np.testing.assert_allclose(np.array(dense(context, state)), np.array(drafter(context, state)), atol=1e-4)
    ar = sum(generate_ar(model, prompts[0], max_tokens=16), [])
    for loaded in (drafter, dense):
        assert sum(generate_redrafter(model, loaded, prompts[0], max_tokens=16, beam=BeamShape(2, 3)), []) == ar
    with pytest.raises(SystemExit):
        train_main(["fit", *common, "--out", str(tmp_path / "x"), "--also", "taps=3"])
    with pytest.raises(SystemExit):
        train_main(["fit", *common, "--out", str(tmp_path / "x"), "--head", "target", "--head-bits", "4"])


def test_fit_stops_after_max_steps(tmp_path):
    """--max-steps ends training inside an epoch, with the held-out accuracy and the drafter saved."""
    model_dir, data, _, _ = self_distilled_data(tmp_path, seed=6, num_prompts=64, new_tokens=16)
    train_main(["fit", "--model", str(model_dir), "--data", str(data), "--out", str(tmp_path / "d"), "--epochs", "3",
                "--batch-tokens", "256", "--max-steps", "5", "--log-every", "1"])
    log = json.loads((tmp_path / "d" / "training.json").read_text())["log"]
    assert [e["step"] for e in log if "loss" in e] == [1, 2, 3, 4, 5]
    assert [e["epoch"] for e in log if "epoch" in e] == [1]


def test_batch_answers_stop_at_eos_as_one_prompt_alone_does():
    """Rows that end at different steps (EOS kept, nothing after it), the batch stopping once
    all have ended: each answer is the prompt's greedy answer decoded alone, token by token."""
    model = tiny_model(0, "llama", vocab=16)
    rng = np.random.default_rng(3)
    prompts = [rng.integers(1, 16, size=rng.integers(2, 6)).tolist() for _ in range(12)]
    eos, max_new = 8, 24

    def alone(prompt):
        tokens, answer = list(prompt), []
        while len(answer) < max_new and (not answer or answer[-1] != eos):
            logits = model.logits(model(mx.array([tokens]), mx.arange(len(tokens))[None], model.new_cache())[:, -1])
            answer.append(int(mx.argmax(logits[0]).item()))
            tokens.append(answer[-1])
        return answer

    wanted = [alone(p) for p in prompts]
    assert generate_batch(model, prompts, max_new, eos_ids={eos}) == wanted  # some rows end, some run to max_new
    ending = [p for p, a in zip(prompts, wanted) if a[-1] == eos]
    ended = [a for a in wanted if a[-1] == eos]
    assert len(ending) >= 8 and len({len(a) for a in ended}) > 4 and max(map(len, ended)) < max_new
    assert generate_batch(model, ending, max_new, eos_ids={eos}) == ended  # every row ends before max_new
