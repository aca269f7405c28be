"""Each study in --quick mode, through its run(config), with its key figure checked for sanity (not merely that it ran)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import experiments
import experiments.__main__
from experiments import STUDIES
from experiments.__main__ import main

pytest.importorskip("matplotlib")


def run_quick(name, tmp_path, **extra):
    out = tmp_path / name
    metrics = experiments.run(name, {"quick": True, "seed": 0, "out": str(out), "verbose": False, **extra})
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["study"] == name
    assert saved["figures"], "every study saves at least one figure"
    for fig in saved["figures"]:
        path = out / fig
        assert path.exists() and path.stat().st_size > 5_000, f"{fig} missing or empty"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return metrics


def test_cli_list(capsys):
    assert main(["list"]) == 0
    printed = capsys.readouterr().out
    for name in STUDIES:
        assert name in printed


def test_unknown_study_is_rejected():
    with pytest.raises(KeyError, match="unknown study"):
        experiments.run("nope", {})


def test_run_from_python_checks_its_config_before_any_work(tmp_path):
    out = tmp_path / "never"
    with pytest.raises(ValueError, match="unknown setting 'bogus' for iris_mlp; valid settings: .*epochs"):
        experiments.run("iris_mlp", {"quick": True, "bogus": 1, "out": str(out)})
    with pytest.raises(ValueError, match="vanishing_gradients setting 'lengths': expected one or more values"):
        experiments.run("vanishing_gradients", {"quick": True, "lengths": [0], "out": str(out)})
    with pytest.raises(ValueError, match="char_lm setting 'temperature': expected a positive finite number"):
        experiments.run("char_lm", {"quick": True, "temperature": 0.0, "out": str(out)})
    with pytest.raises(TypeError, match="config must be a dict of settings or None, got list"):
        experiments.run("iris_mlp", [("quick", True)])
    assert not out.exists()  # nothing ran, nothing was written


def test_iris_mlp(tmp_path):
    m = run_quick("iris_mlp", tmp_path)
    # the analytic rule and jax.grad give the same trajectory (float64, to rounding)
    assert m["analytic_vs_autodiff_max_param_diff"] < 1e-9
    assert m["analytic_vs_autodiff_first_grad_diff"] < 1e-12
    assert m["trajectories_identical"] is True
    assert 0.5 < m["seed_train_accuracy"] <= 1.0
    assert m["test_accuracy"] >= 0.9


def test_iris_same_seed_same_numbers(tmp_path):
    a = experiments.run("iris_mlp", {"quick": True, "seed": 3, "out": str(tmp_path / "a"), "verbose": False})
    b = experiments.run("iris_mlp", {"quick": True, "seed": 3, "out": str(tmp_path / "b"), "verbose": False})
    assert a["test_accuracy"] == b["test_accuracy"]
    assert a["seed_loss_curve"] == b["seed_loss_curve"]


def test_sequence_forecast(tmp_path):
    m = run_quick("sequence_forecast", tmp_path)
    # the seed's own Elman step: its printed inverse-scaled prediction [-2.76, -2.99, -2.99, -2.99]
    np.testing.assert_allclose(m["frames_seed_step_prediction"], [-2.76, -2.99, -2.99, -2.99], atol=0.02)
    assert m["frames_max_abs_error"] < 1.0  # trained cells land near [5, 6, 7, 8] after inverse scaling
    rmse = m["rmse_mean"]
    assert min(rmse["elman"], rmse["lstm"], rmse["gru"]) < rmse["persistence"]
    assert m["best_beats_persistence"] is True


def test_lstm_walkthrough(tmp_path):
    m = run_quick("lstm_walkthrough", tmp_path)
    assert m["step_equals_gate_by_gate"] is True
    assert max(m["step_vs_gate_by_gate_max_diff"].values()) < 1e-12
    np.testing.assert_allclose(m["input_scaled"], (np.arange(1, 7) + 2) * 2 / 11 - 1, atol=1e-12)
    for gate in ("i", "f", "o"):
        assert all(0.0 < v < 1.0 for v in m["gates"][gate])
    assert all(-2.0 <= v <= 9.0 for v in m["prediction_inverse_scaled"])


def test_vanishing_gradients(tmp_path):
    m = run_quick("vanishing_gradients", tmp_path)
    # analytic BPTT and autodiff give the same curves
    assert m["max_rel_diff_analytic_vs_autodiff"] < 1e-8
    flow = m["gradient_flow"]
    # at initialisation the LSTM's gradient decays more slowly than the Elman RNN's (ratio |dL/dh_0| / |dL/dh_T-1|)
    assert flow["lstm (forget bias 1)"]["norm_first_over_last"] > flow["elman"]["norm_first_over_last"]
    assert flow["lstm (forget bias 1)"]["norm_first_over_last"] > flow["lstm (forget bias 0)"]["norm_first_over_last"]
    # the forward dynamics' top Lyapunov exponent is the gradient's decay rate, and every cell's is below 0
    for f in flow.values():
        assert abs(f["grad_log_slope"] - f["lyapunov_top"]) < 0.03, f
        assert f["lyapunov_top"] < 0
    assert flow["lstm (forget bias 1)"]["lyapunov_top"] > flow["elman"]["lyapunov_top"]
    assert (tmp_path / "vanishing_gradients" / "lyapunov.png").exists()
    # the adding problem ran for every cell and length of the quick run (LSTM and GRU at T = 10, 30), finite MSEs
    assert set(m["adding"]) == {"lstm@T=10", "gru@T=10", "lstm@T=30", "gru@T=30"}
    assert all(np.isfinite(v["mse"]) for v in m["adding"].values())
    # the gated cells learn the short problem: below the 0.167 of predicting the mean
    assert min(m["adding"]["lstm@T=10"]["mse"], m["adding"]["gru@T=10"]["mse"]) < m["adding_baseline_mse"]


def test_sequential_digits(tmp_path):
    m = run_quick("sequential_digits", tmp_path)
    acc = m["test_accuracy"]
    assert set(acc) == {"elman", "lstm", "gru"}
    assert max(acc.values()) > 0.8  # ten classes: chance is 0.1


def test_word_order(tmp_path):
    m = run_quick("word_order", tmp_path)
    assert m["bag_of_words_identical"] is True
    assert m["bow_prediction_max_diff"] < 1e-6  # same input, same prediction
    assert m["bow_next_word_accuracy"] <= 0.5
    diffs = m["hidden_state_diff_per_step"]
    assert diffs[0] < 1e-6  # both phrases start with "give"
    assert diffs[1] > 1e-2 and diffs[2] > 1e-2  # then the hidden states differ
    assert m["rnn_next_word_accuracy"] == 1.0
    assert m["rnn_prediction_max_diff"] > 0.5
    after = m["simple_rnn_after"]
    assert after[0] > 0.5 > after[1]
    if m["simple_rnn_keras_max_diff"] is not None:
        assert m["simple_rnn_keras_max_diff"] < 1e-5


def test_char_lm(tmp_path):
    m = run_quick("char_lm", tmp_path)
    assert m["held_out_bpc"] < m["unigram_bpc"]
    assert 2.0 < m["unigram_bpc"] < 6.0
    assert all(isinstance(s, str) and len(s) > 100 for s in m["samples"])
    assert (tmp_path / "char_lm" / "samples.txt").exists()


def test_char_lm_text_file(tmp_path):
    text = tmp_path / "tiny.txt"
    text.write_text("the cat sat on the mat. the dog sat on the log. " * 120, encoding="utf-8")
    m = run_quick("char_lm", tmp_path, text=str(text), steps=60, hidden=32)
    assert m["source"] == str(text)
    assert m["held_out_bpc"] < m["unigram_bpc"]


def test_sentiment(tmp_path):
    m = run_quick("sentiment", tmp_path)
    assert m["generated_corpus"] is False
    assert m["n_texts"] == 4000
    assert m["test_accuracy"] > m["majority_baseline"] + 0.05


def test_sentiment_data_file(tmp_path):
    rows = ["text\tlabel"]
    for k in range(150):
        rows.append(f"a truly great and wonderful film number {k}\tpos")
        rows.append(f"a truly awful and boring film number {k}\tneg")
    path = tmp_path / "mine.tsv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    m = run_quick("sentiment", tmp_path, data=str(path), epochs=3)
    assert m["n_texts"] == 300
    assert m["test_accuracy"] > 0.9


# ------------------------------------------------------------------------------------ the command line's checks
# each bad argument is a usage error (exit code 2) at parsing, naming the flag, before any study starts


def cli_error(capsys, *argv):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", *argv])
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["vanishing_gradients", "--quick", "--lengths", "0"], ["--lengths", "integer >= 2", "'0'"]),
        (["vanishing_gradients", "--lengths", "10", "-5"], ["--lengths", "integer >= 2", "'-5'"]),
        (["sequence_forecast", "--quick", "--horizon", "0"], ["--horizon", "positive integer", "'0'"]),
        (["iris_mlp", "--epochs", "-1"], ["--epochs", "positive integer", "'-1'"]),
        (["iris_mlp", "--epochs", "2.5"], ["--epochs", "positive integer", "'2.5'"]),
        (["iris_mlp", "--seed", "-1"], ["--seed", "non-negative integer"]),
        (["char_lm", "--temperature", "0"], ["--temperature", "positive", "'0'"]),
        (["char_lm", "--temperature", "-0.5"], ["--temperature", "positive", "'-0.5'"]),
        (["char_lm", "--temperature", "nan"], ["--temperature", "finite"]),
        (["char_lm", "--text", "/nonexistent/file.txt"], ["--text", "existing", "no such file"]),
        (["sentiment", "--data", "/nonexistent/data.tsv"], ["--data", "existing", "no such file"]),
        (["iris_mlp", "--out", __file__], ["--out", "existing file"]),
        # a study-specific flag for a study without that setting
        (["iris_mlp", "--horizon", "3"], ["--horizon", "iris_mlp", "sequence_forecast"]),
        (["char_lm", "--epochs", "3"], ["--epochs", "char_lm"]),
        # --set: malformed, unknown keys, and values checked like the flag of the same name
        (["iris_mlp", "--set", "=3"], ["--set", "KEY=VALUE", "'=3'"]),
        (["iris_mlp", "--set", "epochs"], ["--set", "KEY=VALUE"]),
        (["iris_mlp", "--set", "bogus_key=1"], ["--set", "'bogus_key'", "valid keys", "seed_iters"]),
        (["all", "--set", "bogus_key=1"], ["--set", "'bogus_key'", "valid keys"]),
        (["iris_mlp", "--set", "epochs=abc"], ["--set epochs", "positive integer", "'abc'"]),
        (["char_lm", "--set", "temperature=0"], ["--set temperature", "positive"]),
        (["char_lm", "--set", "text=/nonexistent/file.txt"], ["--set text", "no such file"]),
        (["sequence_forecast", "--set", "horizon=0"], ["--set horizon", "positive integer"]),
        (["vanishing_gradients", "--set", "lengths=[10, 1]"], ["--set lengths", "integer >= 2"]),
        (["vanishing_gradients", "--set", "adding_cells=lstm,rnn"], ["--set adding_cells", "elman, lstm, gru"]),
        (["iris_mlp", "--set", "patience=0"], ["--set patience", "positive integer, or None"]),
        (["iris_mlp", "--set", "fractions=(0.5, 0.5)"], ["--set fractions", "three positive numbers"]),
        (["sentiment", "--set", "dropout=1"], ["--set dropout", "[0, 1)"]),
        (["sentiment", "--set", "bidirectional=maybe"], ["--set bidirectional", "true or false"]),
    ],
)
def test_cli_rejects_bad_arguments(capsys, monkeypatch, argv, expected):
    monkeypatch.setattr(experiments.__main__, "run", pytest.fail)  # nothing may start
    err = cli_error(capsys, *argv)
    assert "usage:" in err
    for text in expected:
        assert text in err, (text, err)


def test_cli_checks_the_forecast_split(capsys, monkeypatch):
    # a horizon past the last test window is caught at parsing, with the largest horizon that fits
    monkeypatch.setattr(experiments.__main__, "run", pytest.fail)
    err = cli_error(capsys, "sequence_forecast", "--horizon", "50")
    assert "horizon=50" in err and "0 test" in err and "at most horizon=49" in err


def test_cli_checks_the_char_lm_text(capsys, monkeypatch, tmp_path):
    # a text too short (as given, or cut by max_chars) or not UTF-8 is caught at parsing, not when the run starts
    monkeypatch.setattr(experiments.__main__, "run", pytest.fail)
    short, binary = tmp_path / "short.txt", tmp_path / "binary.txt"
    short.write_text("x" * 100, encoding="utf-8")
    binary.write_bytes(b"\xff\xfe not text")
    assert "too short for a language model: 100 characters" in cli_error(capsys, "char_lm", "--text", str(short))
    assert "is not UTF-8" in cli_error(capsys, "char_lm", "--text", str(binary))
    assert "max_chars=100" in cli_error(capsys, "char_lm", "--set", "max_chars=100")


def test_cli_passes_valid_arguments(monkeypatch, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("x" * 3000, encoding="utf-8")
    calls = []
    monkeypatch.setattr(experiments.__main__, "run", lambda name, config: calls.append((name, config)))
    argv = ["char_lm", "--quick", "--seed", "3", "--text", str(text), "--temperature", "0.5"]
    argv += ["--set", "hidden=8", "--set", "lr=1e-2", "--set", "max_chars=None", "--set", "prompt=The "]
    assert main(["run", *argv]) == 0
    assert calls == [
        (
            "char_lm",
            {
                "quick": True,
                "seed": 3,
                "text": str(text),
                "temperature": 0.5,
                "hidden": 8,
                "lr": 0.01,
                "max_chars": None,
                "prompt": "The ",
            },
        )
    ]
    calls.clear()
    argv = ["vanishing_gradients", "--lengths", "10", "30", "--epochs", "2", "--set", "adding_cells=lstm,gru"]
    assert main(["run", *argv]) == 0
    assert calls[0][1]["lengths"] == [10, 30] and calls[0][1]["epochs"] == 2
    assert calls[0][1]["adding_cells"] == ["lstm", "gru"]


def test_every_setting_has_a_type():
    # each study's DEFAULTS and QUICK keys (read from source by study_keys) have a type in CONFIG_TYPES, and the
    # defaults themselves pass it
    from experiments._common import CONFIG_TYPES, study_keys

    for name in STUDIES:
        module = experiments.load(name)
        keys = study_keys(name)
        assert keys >= set(module.DEFAULTS) | set(module.QUICK)
        assert keys <= set(CONFIG_TYPES), keys - set(CONFIG_TYPES)
        for key, value in {**module.DEFAULTS, **module.QUICK}.items():
            if value is not None:
                assert CONFIG_TYPES[key](value) == (list(value) if isinstance(value, list) else value), (name, key)


def test_cli_all_gives_each_study_only_the_settings_it_has(monkeypatch):
    calls = {}
    monkeypatch.setattr(experiments.__main__, "run", lambda name, config: calls.__setitem__(name, config))
    assert main(["run", "all", "--quick", "--set", "horizon=3"]) == 0
    assert set(calls) == set(experiments.STUDIES)
    assert calls["sequence_forecast"]["horizon"] == 3 and "horizon" not in calls["iris_mlp"]
    for name, config in calls.items():  # and what each study gets passes the check that run() makes
        assert experiments.check(name, config) == config
