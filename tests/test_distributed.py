"""Multi-process runs (obliviate.distributed): the rank-aware cache, run dirs and data sharding,
checked with processes played by threads; the DeepSpeed paths with mocks (deepspeed is not
installed here); and two real CPU processes (gloo) under ``accelerate launch`` against one process
with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from obliviate import distributed
from obliviate.cache import Cache
from obliviate.errors import ConfigError, ObliviateError

ROOT = Path(__file__).resolve().parents[1]
CPU_2PROC = ROOT / "src" / "obliviate" / "resources" / "accelerate" / "cpu_2proc.yaml"


# ------------------------------------------------------------------ processes played by threads


class ThreadGroup:
    """``n`` threads standing in for the processes of a launch: distributed's meeting points
    (barrier, broadcast, all_ok) synchronise them, and each thread has its own rank."""

    def __init__(self, n: int = 2) -> None:
        self.n = n
        self.bar = threading.Barrier(n, timeout=30)  # a deadlock fails instead of hanging
        self.local = threading.local()
        self.slot: Any = None
        self.votes: list[Any] = [None] * n

    def rank(self) -> int:
        return self.local.rank

    def barrier(self) -> None:
        self.bar.wait()

    def broadcast(self, obj: Any) -> Any:
        if self.rank() == 0:
            self.slot = obj
        self.bar.wait()
        value = self.slot
        self.bar.wait()
        return value

    def all_ok(self, ok: bool) -> bool:
        self.votes[self.rank()] = bool(ok)
        self.bar.wait()
        result = all(self.votes)
        self.bar.wait()
        return result

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(distributed, "rank", self.rank)
        monkeypatch.setattr(distributed, "world_size", lambda: self.n)
        monkeypatch.setattr(distributed, "active", lambda: not distributed._in_solo_section())
        monkeypatch.setattr(distributed, "barrier", self.barrier)
        monkeypatch.setattr(distributed, "broadcast", self.broadcast)
        monkeypatch.setattr(distributed, "all_ok", self.all_ok)

    def run(self, fn) -> list[tuple[str, Any]]:
        """``fn(rank)`` on every "process": ``[("ok", result) | ("error", exception)]`` by rank."""
        out: list[Any] = [None] * self.n

        def body(r: int) -> None:
            self.local.rank = r
            try:
                out[r] = ("ok", fn(r))
            except BaseException as e:  # noqa: BLE001 - reported to the test
                out[r] = ("error", e)

        threads = [threading.Thread(target=body, args=(r,)) for r in range(self.n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        return out


@pytest.fixture
def group(monkeypatch: pytest.MonkeyPatch) -> ThreadGroup:
    g = ThreadGroup(2)
    g.install(monkeypatch)
    return g


def test_trained_entry_is_built_by_every_process_and_committed_once(group, tmp_path):
    cache = Cache(tmp_path)
    calls: list[tuple[int, Path]] = []

    def build(r: int):
        def fill(tmp: Path) -> None:
            calls.append((r, tmp))
            (tmp / f"part{r}").write_text("x")  # e.g. each rank's RNG state in a checkpoint

        return fill

    first = group.run(lambda r: cache.get_or_build("finetune", {"k": 1}, build(r)))
    final = cache.path("finetune", {"k": 1})
    assert first == [("ok", (final, False))] * 2
    assert sorted(r for r, _ in calls) == [0, 1]
    assert calls[0][1] == calls[1][1]  # one temp dir, shared
    assert (final / ".complete").is_file() and (final / "part0").is_file()
    assert (final / "part1").is_file()
    assert not list(final.parent.glob("*.tmp*"))
    calls.clear()
    again = group.run(lambda r: cache.get_or_build("finetune", {"k": 1}, build(r)))
    assert again == [("ok", (final, True))] * 2 and calls == []


def test_untrained_entry_is_built_by_the_main_process_alone(group, tmp_path):
    cache = Cache(tmp_path)
    builders: list[int] = []

    def build(r: int):
        def fill(tmp: Path) -> None:
            builders.append(r)
            assert not distributed.active()  # alone: nested meeting points are skipped
            (tmp / "results.json").write_text("{}")

        return fill

    out = group.run(lambda r: cache.get_or_build("eval", {"k": 2}, build(r)))
    final = cache.path("eval", {"k": 2})
    assert out == [("ok", (final, False))] * 2 and builders == [0]
    assert (final / "results.json").is_file()


def test_a_process_failing_in_a_trained_build_stops_all_and_leaves_no_entry(group, tmp_path):
    cache = Cache(tmp_path)

    def build(r: int):
        def fill(tmp: Path) -> None:
            if r == 1:
                raise ValueError("rank 1 broke")

        return fill

    out = group.run(lambda r: cache.get_or_build("unlearn", {"k": 3}, build(r)))
    assert out[1][0] == "error" and "rank 1 broke" in str(out[1][1])
    assert out[0][0] == "error" and isinstance(out[0][1], distributed.PeerFailure)
    final = cache.path("unlearn", {"k": 3})
    assert not final.exists() and not list(final.parent.glob("*.tmp*"))


def test_the_main_process_error_reaches_the_others_as_the_same_line(group):
    def fn(r: int) -> str:
        def main_only() -> str:
            raise ConfigError("x is bad", "set x=1")

        return distributed.on_main(main_only)

    out = group.run(fn)
    assert [kind for kind, _ in out] == ["error", "error"]
    assert all(isinstance(e, ConfigError) and e.one_line() == "x is bad (set x=1)" for _, e in out)

    def crash(r: int) -> str:
        return distributed.on_main(lambda: 1 / 0)

    out = group.run(crash)
    assert isinstance(out[0][1], ZeroDivisionError)
    assert isinstance(out[1][1], distributed.PeerFailure)
    assert "ZeroDivisionError" in str(out[1][1])


def test_staged_run_is_claimed_logged_and_swapped_in_once(group, tmp_path):
    from obliviate.runs import staged_run, write_text

    run = tmp_path / "run"

    def command(r: int) -> str:
        with staged_run(run, "unlearn", ("model",), "model") as st:
            write_text(st.out / "who.txt", f"rank {r}")  # only the main process writes
            if distributed.is_main():
                (st.out / "model").mkdir()
            return str(st.path)

    out = group.run(command)
    assert [kind for kind, _ in out] == ["ok", "ok"] and out[0][1] == out[1][1]
    assert (run / "model").is_dir() and (run / "who.txt").read_text() == "rank 0"
    assert not list(run.glob(".partial-*")) and (run / "obliviate.log").is_file()
    refused = group.run(command)  # a finished run: refused on every process, nothing changed
    assert all(kind == "error" and "already holds results" in str(e) for kind, e in refused)


def test_staged_run_failing_on_one_process_removes_the_stage_everywhere(group, tmp_path):
    from obliviate.runs import staged_run

    run = tmp_path / "run"

    def command(r: int) -> None:
        with staged_run(run, "unlearn", ("model",), "model") as st:
            (st.out / "model").mkdir(exist_ok=True)
            if r == 1:
                raise ValueError("rank 1 broke")

    out = group.run(command)
    assert isinstance(out[1][1], ValueError)
    assert isinstance(out[0][1], distributed.PeerFailure)
    assert not (run / "model").exists() and not list(run.glob(".partial-*"))


# ------------------------------------------------------------------ data sharding


@pytest.mark.parametrize(("n", "batch", "world"), [(16, 4, 2), (10, 4, 2), (14, 4, 2), (7, 2, 3)])
def test_shard_layout_is_accelerates_batch_sampler_shard(n, batch, world):
    """Process r's k-th item is position ``ShardLayout.position(k)`` of the epoch's sampler
    order (positions ≥ n are accelerate's fill-in repeats)."""
    from accelerate.data_loader import BatchSamplerShard
    from torch.utils.data import BatchSampler, SequentialSampler

    from obliviate.data.collate import ShardLayout

    for r in range(world):
        shard = BatchSamplerShard(
            BatchSampler(SequentialSampler(range(n)), batch, False), world, r, even_batches=True
        )
        got = [i for b in shard for i in b]
        lay = ShardLayout(r, world, batch, n, start=0)
        assert lay.batches_per_epoch == len(shard)
        assert len(got) == lay.batches_per_epoch * batch
        for k, item in enumerate(got):
            epoch, p = lay.position(k)
            assert epoch == 0
            if p < n:
                assert item == p
        assert lay.position(len(got))[0] == 1  # the next access opens epoch 2


@pytest.mark.parametrize(("n", "batch", "world"), [(16, 4, 2), (10, 4, 2), (9, 2, 3)])
def test_sharded_draws_are_the_one_process_runs_draws(n, batch, world):
    """Each process draws, for its slice of every global batch, the retain record and refusal a
    one-process run with batch ``batch × world`` draws for those items (2 epochs)."""
    import random

    from obliviate.data.collate import UnlearnDataset
    from obliviate.data.schema import QARecord

    def rec(i: int) -> QARecord:
        return QARecord(question=f"q{i}", answer=f"a{i}")

    forget = [rec(i) for i in range(n)]
    retain = [rec(100 + i) for i in range(50)]
    idk = [f"idk{i}" for i in range(20)]
    perms = [random.Random(e).sample(range(n), n) for e in range(2)]  # any sampler order

    one = UnlearnDataset(forget, retain, idk, seed=7)
    first = one.first_batch(batch * world)
    single = {}  # (epoch, position) -> (retain question, refusal)
    for e, perm in enumerate(perms):
        for p, i in enumerate(perm):
            it = one[i]
            single[(e, p)] = (it["retain"].question, it["idk"])
    for r in range(world):
        ds = UnlearnDataset(forget, retain, idk, seed=7)
        ds.shard(r, world, batch)
        mine = ds.first_batch(batch)
        want = first[r * batch : (r + 1) * batch]
        if want:
            assert [(x["forget"], x["retain"], x["idk"]) for x in mine] == [
                (x["forget"], x["retain"], x["idk"]) for x in want
            ]
        lay = ds.layout
        for k in range(2 * lay.batches_per_epoch * batch):
            e, p = lay.position(k)
            it = ds[perms[e][p] if p < n else perms[e][p - n]]
            if p < n:
                assert (it["retain"].question, it["idk"]) == single[(e, p)], (r, k)


def test_sharded_resume_skips_the_accesses_already_trained_on():
    """``items_consumed`` with the world size counts one process's accesses (hand numbers:
    10 items, batch 4, 2 processes → 2 full batches an epoch; grad_accum 1 → 2 steps an epoch)."""
    from obliviate.training.guard import items_consumed

    assert items_consumed(3, 10, 4, 1, world=2) == 12  # an epoch (8) + one batch (4)
    assert items_consumed(2, 10, 4, 2, world=2) == 16  # grad_accum 2: one step an epoch
    assert items_consumed(4, 10, 4, 1) == 10 + 4  # one process (3 batches an epoch): unchanged
    from obliviate.data.collate import UnlearnDataset
    from obliviate.data.schema import QARecord

    forget = [QARecord(question=f"q{i}", answer="a") for i in range(10)]
    retain = [QARecord(question=f"r{i}", answer="a") for i in range(30)]
    whole, resumed = (UnlearnDataset(forget, retain, seed=1) for _ in range(2))
    for ds in (whole, resumed):
        ds.shard(1, 2, 4)
        ds.first_batch(4)
    seen = [whole[0]["retain"].question for _ in range(16)]
    resumed.advance(items_consumed(3, 10, 4, 1, world=2))
    assert [resumed[0]["retain"].question for _ in range(4)] == seen[12:]


# ------------------------------------------------------------------ DeepSpeed, launch settings


def test_reference_engine_config_under_zero3():
    train = {
        "zero_optimization": {
            "stage": 3,
            "offload_optimizer": {"device": "cpu"},
            "offload_param": {"device": "cpu"},
            "stage3_gather_16bit_weights_on_model_save": True,
        },
        "optimizer": {"type": "AdamW"},
        "scheduler": {"type": "WarmupLR"},
        "bf16": {"enabled": True},
        "train_micro_batch_size_per_gpu": 4,
    }
    ref = distributed.reference_ds_config(train, hidden_size=2048)
    assert "optimizer" not in ref and "scheduler" not in ref
    zero = ref["zero_optimization"]
    assert zero["stage"] == 3 and zero["offload_param"] == {"device": "cpu"}
    assert "offload_optimizer" not in zero
    assert zero["reduce_bucket_size"] == 2048 * 2048  # 4,194,304
    assert zero["stage3_param_persistence_threshold"] == 20480
    assert zero["stage3_prefetch_bucket_size"] == 3774873  # int(0.9 · 2048²)
    assert ref["bf16"] == {"enabled": True} and ref["train_micro_batch_size_per_gpu"] == 4
    assert "optimizer" in train and "offload_optimizer" in train["zero_optimization"]  # a copy


def test_shipped_accelerate_configs():
    """The configs parse as accelerate configs; ZeRO-3 gathers 16-bit weights on save, and the
    reference config made from the plugin's (with its "auto" values) keeps stage 3."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DeepSpeedPlugin, DistributedType

    folder = CPU_2PROC.parent
    got = {f.stem: load_config_from_file(str(f)) for f in folder.glob("*.yaml")}
    assert set(got) == {"cpu_2proc", "multi_gpu", "deepspeed_zero2", "deepspeed_zero3"}
    assert got["cpu_2proc"].num_processes == 2
    assert got["multi_gpu"].distributed_type == DistributedType.MULTI_GPU
    for name, stage in (("deepspeed_zero2", 2), ("deepspeed_zero3", 3)):
        c = got[name]
        assert c.distributed_type == DistributedType.DEEPSPEED and c.mixed_precision == "bf16"
        assert c.deepspeed_config["zero_stage"] == stage
        assert "gradient_accumulation_steps" not in c.deepspeed_config  # from unlearn.grad_accum
    plugin = DeepSpeedPlugin(**got["deepspeed_zero3"].deepspeed_config)
    zero = plugin.deepspeed_config["zero_optimization"]
    assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    ref = distributed.reference_ds_config(plugin.deepspeed_config, hidden_size=64)
    assert ref["zero_optimization"]["stage"] == 3 and "optimizer" not in ref


def _fake_trainer(stage: int | None, device: str = "cpu", state: Any = None):
    plugin = None
    if stage is not None:
        plugin = SimpleNamespace(deepspeed_config={"zero_optimization": {"stage": stage}})
    accel = SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=plugin))
    if state is not None:
        accel.get_state_dict = state
    return SimpleNamespace(accelerator=accel, args=SimpleNamespace(device=device), model_wrapped=1)


def test_prepare_reference_without_zero3_is_a_frozen_copy_on_the_device():
    from model_dirs import random_llama

    ref = random_llama().train()
    out = distributed.prepare_reference(ref, _fake_trainer(None))
    assert out is ref and not ref.training
    assert not any(p.requires_grad for p in ref.parameters())
    assert distributed.prepare_reference(None, _fake_trainer(3)) is None


def test_prepare_reference_under_zero3_builds_an_inference_engine(monkeypatch):
    from model_dirs import random_llama

    seen: dict[str, Any] = {}

    class Engine:
        def eval(self):
            seen["eval"] = True
            return self

    def initialize(model, config):
        seen["model"], seen["config"] = model, config
        return Engine(), None, None, None

    monkeypatch.setitem(sys.modules, "deepspeed", SimpleNamespace(initialize=initialize))
    ref = random_llama()
    out = distributed.prepare_reference(ref, _fake_trainer(3))
    assert isinstance(out, Engine) and seen["eval"] and seen["model"] is ref
    assert seen["config"]["zero_optimization"]["stage"] == 3
    assert seen["config"]["zero_optimization"]["reduce_bucket_size"] == 32 * 32
    assert not any(p.requires_grad for p in ref.parameters())


def test_prepare_reference_leaves_the_lora_reference_alone():
    from model_dirs import random_llama

    from obliviate.config import LoraConfig
    from obliviate.training.lora import attach_lora, disabled_adapter_reference

    model = random_llama()
    attach_lora(model, LoraConfig(r=2))
    ref = disabled_adapter_reference(model)
    assert distributed.prepare_reference(ref, _fake_trainer(3)) is ref


def test_zero3_weights_are_gathered_for_the_main_process(monkeypatch):
    model = object()
    full = {"w": 1}
    distributed.gather_weights(_fake_trainer(3, state=lambda m: full), model)
    assert distributed.gathered_weights(model) is full
    assert distributed.gathered_weights(model) is None  # handed over once
    distributed.gather_weights(_fake_trainer(2, state=lambda m: full), model)
    assert distributed.gathered_weights(model) is None  # ZeRO-2: the model holds its weights

    def refuse(m):
        raise ValueError("Cannot get 16bit model weights because ... is False.")

    with pytest.raises(ObliviateError, match="zero3_save_16bit_model"):
        distributed.gather_weights(_fake_trainer(3, state=refuse), model)


def test_zero3_refuses_lora_mask_and_evaluation_during_training(monkeypatch):
    from obliviate import load_config

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    cfg = load_config("demo", ["unlearn.lora.r=4"]).unlearn
    with pytest.raises(ConfigError, match="unlearn.lora cannot run under DeepSpeed ZeRO-3"):
        distributed.check_zero3(cfg)
    masked = load_config("demo", ["unlearn.mask.fraction=0.1"]).unlearn
    with pytest.raises(ConfigError, match="unlearn.mask cannot run under DeepSpeed ZeRO-3"):
        distributed.check_zero3(masked)
    distributed.check_zero3(load_config("demo", []).unlearn)  # a plain method runs
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    distributed.check_zero3(cfg)


def test_launch_settings_from_the_environment(monkeypatch):
    from obliviate.training.args import deepspeed_bf16

    monkeypatch.delenv(distributed.TIMEOUT_ENV, raising=False)
    assert distributed.timeout_s() == 6 * 3600
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "900")
    assert distributed.timeout_s() == 900
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "soon")
    with pytest.raises(ConfigError, match="is not a positive number of seconds"):
        distributed.timeout_s()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert distributed.threads_per_process(16) == 8 and distributed.threads_per_process(1) == 1
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert deepspeed_bf16()
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    assert not deepspeed_bf16()


def test_each_process_of_a_gpu_launch_gets_its_own_gpu(monkeypatch):
    import torch

    from obliviate.models.io import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("auto") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)  # an explicit index is kept
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert resolve_device("auto") == torch.device("cuda")


def test_setup_runtime_in_a_launch(monkeypatch):
    """Non-main processes print no result; threads are shared between the local processes."""
    import torch

    from obliviate import load_config
    from obliviate.experiment import setup_runtime

    started: list[bool] = []
    monkeypatch.setattr(distributed, "init", lambda cpu: started.append(cpu))
    monkeypatch.setattr(sys, "stdout", sys.stdout)  # restored afterwards
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    before = torch.get_num_threads()
    for k, v in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(k, v)
    try:
        setup_runtime(load_config("demo", ["device=cpu"]))
        assert started == [True] and torch.get_num_threads() == 4
        assert sys.stdout.name == os.devnull
    finally:
        if getattr(sys.stdout, "name", None) == os.devnull:
            sys.stdout.close()
        torch.set_num_threads(before)


# ------------------------------------------------------------------ two real processes

STEPS = 4  # 16 forget records, global batch 8, 2 epochs


def _common(target: str, cache: Path) -> list[str]:
    from mini import MINI

    return [
        *MINI,
        "benchmark.qa_per_author=16",  # forget10 = 16 records: whole global batches of 8
        f"model.path={target}",
        f"cache_dir={cache}",
        "unlearn.epochs=2",
    ]


@pytest.fixture(scope="module")
def launch_setup(tmp_path_factory) -> SimpleNamespace:
    from obliviate import api, load_config

    root = tmp_path_factory.mktemp("dist")
    cache = root / "cache"
    from mini import MINI

    cfg = load_config("demo", [*MINI, "benchmark.qa_per_author=16", f"cache_dir={cache}"])
    api.setup_runtime(cfg)
    target = api.target_model(cfg)  # once, in-process: both runs start from it
    return SimpleNamespace(root=root, cache=cache, target=target, common=_common(target, cache))


def _cli(argv: list[str]) -> None:
    from obliviate.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0, f"obliviate {' '.join(argv)} exited {exc.value.code}"


def _launch(args: list[str]) -> None:
    """``accelerate launch --config_file cpu_2proc.yaml <args>`` (2 CPU processes, gloo)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OBLIVIATE_PROGRESS="0", OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_2PROC)]
    proc = subprocess.run(
        [*cmd, *args], env=env, capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-4000:]


def _train_log(run: Path) -> list[dict[str, Any]]:
    from obliviate.models.io import read_card

    card = read_card(str(run / "model"))
    assert card["steps"] == STEPS
    return card["train_log"]


def _relative_update_gap(a: Path, b: Path, start: str) -> float:
    """‖θ_a − θ_b‖ / ‖θ_a − θ_start‖ over all weights: how far apart two runs' updates are."""
    from safetensors.torch import load_file

    wa, wb, w0 = (load_file(str(Path(p) / "model.safetensors")) for p in (a, b, start))
    gap = sum(float(((wa[k] - wb[k]).double() ** 2).sum()) for k in wa) ** 0.5
    moved = sum(float(((wa[k] - w0[k]).double() ** 2).sum()) for k in wa) ** 0.5
    return gap / moved


@pytest.fixture(scope="module")
def npo_runs(launch_setup) -> SimpleNamespace:
    """NPO with the AP retain term, whose terms are both means over sequences: 1 process × batch
    8 in-process, and ``accelerate launch -m obliviate unlearn`` with 2 processes × batch 4."""
    s = launch_setup
    npo = [*s.common, "unlearn.method=npo", "unlearn.params.retain_loss=ap"]
    one, two = s.root / "npo1", s.root / "npo2"
    _cli(["unlearn", *npo, "unlearn.batch_size=8", f"run_dir={one}"])
    _launch(["-m", "obliviate", "unlearn", *npo, "unlearn.batch_size=4", f"run_dir={two}"])
    return SimpleNamespace(one=one, two=two)


@pytest.mark.slow
def test_two_processes_match_one_process_for_sequence_mean_losses(launch_setup, npo_runs):
    """NPO's forget term and AP are means over sequences, so the mean of two processes' means
    over 4 sequences is the mean over 8: the runs differ only by float summation order (~1e-7
    relative per step). The AP term reads the retain record and the refusal paired with every
    forget record, so equal losses also mean equal pairing. Tolerances: 1e-5 relative per step
    (100× the float noise, far below any change of data: a different pairing moves the loss by
    > 1e-2 here); the two runs' weight updates differ by < 1e-4 of their size."""
    one, two = _train_log(npo_runs.one), _train_log(npo_runs.two)
    assert [r["step"] for r in one] == [r["step"] for r in two] == list(range(1, STEPS + 1))
    for a, b in zip(one, two, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
    gap = _relative_update_gap(npo_runs.one / "model", npo_runs.two / "model", launch_setup.target)
    assert gap < 1e-4
    log = (npo_runs.two / "obliviate.log").read_text()
    assert log.count("$ obliviate unlearn") == 1  # the main process logs, once
    assert log.count(f"step {STEPS}/{STEPS}:") == 1


def _predicted_token_mean_gap(s: SimpleNamespace, method: str) -> list[tuple[float, float]]:
    """Per step, at the target's weights: the loss of the global batch of 8 (one process) and the
    mean of its two halves' losses (two processes). The trainer's data order is accelerate's
    seeded sampler (data_seed = unlearn.seed, + epoch), shared by both runs."""
    import torch
    from accelerate.data_loader import SeedableRandomSampler

    from obliviate import api, load_config
    from obliviate.data.collate import UnlearnCollator, UnlearnDataset
    from obliviate.methods import build_method
    from obliviate.models.io import load_model, load_tokenizer

    cfg = load_config("demo", [*s.common, f"unlearn.method={method}"])
    u, bench = cfg.unlearn, api.load_benchmark(cfg)
    m = build_method(u.method, u.params)
    req = m.requirements()
    model, tok = load_model(s.target, "float32", "cpu"), load_tokenizer(s.target)
    ds = UnlearnDataset(bench.forget, bench.retain, seed=u.seed)
    collate = UnlearnCollator(tok, req, u.max_length)
    ds.first_batch(8)
    sampler = SeedableRandomSampler(
        data_source=range(len(ds)), num_samples=len(ds), generator=None, data_seed=u.seed
    )
    rows = []
    with torch.no_grad():
        for _ in range(2):
            order = list(iter(sampler))
            for start in range(0, len(order), 8):
                items = [ds[i] for i in order[start : start + 8]]
                halves = [float(m.loss(model, collate(items[h : h + 4]))) for h in (0, 4)]
                rows.append((float(m.loss(model, collate(items))), sum(halves) / 2))
    return rows


@pytest.mark.slow
def test_token_mean_losses_differ_by_the_per_process_weighting_and_evaluation_runs(
    launch_setup, npo_runs
):
    """GradDiff's two terms are means over answer tokens: each process averages over its own
    tokens and DDP averages the processes, which weights tokens differently from one mean over
    the global batch. The difference is computed here at the target's weights, per step.

    - Step 1 (same weights in both runs) matches it exactly: the one-process loss is the global
      batch's, the two-process loss the mean of its halves' (within the card's 6 decimals).
    - Later steps: the weights have moved (by the loss change ``drift`` since the target), so the
      gap is allowed to move by half that drift; a wrong pairing or batch would change the loss
      by far more (> 1e-2).

    The same launch then evaluates the 2-process NPO model (``obliviate eval``): the retain
    model it needs is trained by both processes together, then the main process evaluates while
    the other waits."""
    s = launch_setup
    gd = [*s.common, "unlearn.method=graddiff"]
    one, two = s.root / "gd1", s.root / "gd2"
    ev = s.root / "eval2"
    _cli(["unlearn", *gd, "unlearn.batch_size=8", f"run_dir={one}"])
    job = [
        ["unlearn", *gd, "unlearn.batch_size=4", f"run_dir={two}"],
        ["eval", *s.common, "--model", str(npo_runs.two / "model"), f"run_dir={ev}"],
    ]
    _launch([str(ROOT / "tests" / "dist_job.py"), json.dumps(job)])
    predicted = _predicted_token_mean_gap(s, "graddiff")
    logs = zip(_train_log(one), _train_log(two), predicted, strict=True)
    for t, (a, b, (full, halves)) in enumerate(logs, start=1):
        if t == 1:
            assert a["loss"] == pytest.approx(full, abs=2e-6)
            assert b["loss"] == pytest.approx(halves, abs=2e-6)
            assert abs(halves - full) > 1e-4  # the weighting matters here: the check can fail
        drift = abs(a["loss"] - full)
        assert abs((b["loss"] - a["loss"]) - (halves - full)) <= 0.5 * drift + 2e-6, t

    summary = json.loads((ev / "summary.json").read_text())
    assert summary["forget_quality"] is not None  # the retain reference was found and scored
    assert summary["model"] == str((npo_runs.two / "model").resolve())
    assert (ev / "eval").is_dir() and (ev / "obliviate.log").read_text().count("$ obliviate") == 1


def test_an_evaluation_built_by_the_main_process_is_read_by_the_others(
    group, tmp_path, monkeypatch
):
    """``api.evaluate_results`` outside ``on_main`` (the retain reference of ``obliviate run`` or
    of ``eval_every`` in a launch): the main process scores, the others read its cache entry."""
    from types import SimpleNamespace

    import obliviate.artefacts
    import obliviate.eval.suite as suite
    from obliviate import api
    from obliviate.eval.suite import SuiteResult

    scored: list[int] = []

    def fake_splits(*a, **k):
        scored.append(group.rank())
        return SuiteResult([], {"x": "unavailable: test"}, {"forwards": 7})

    monkeypatch.setattr(obliviate.artefacts, "load_artefact", lambda *a, **k: (None, None))
    monkeypatch.setattr(suite, "evaluate_splits", fake_splits)
    monkeypatch.setattr(api, "eval_cache_key", lambda *a, **k: {"k": "eval-read"})
    cfg = SimpleNamespace(
        eval=SimpleNamespace(reference_model=None),
        model=SimpleNamespace(dtype="float32", allow_pickle=False),
    )
    exp = SimpleNamespace(cfg=cfg, cache=Cache(tmp_path), device="cpu", benchmark=None)
    out = group.run(lambda r: api.evaluate_results(exp, "model", options=object()))
    assert [kind for kind, _ in out] == ["ok", "ok"], out
    assert scored == [0]
    assert all(res.passes["forwards"] == 7 and hit is False for _, (res, hit) in out)


def test_each_error_line_is_printed_by_the_process_it_happened_in(monkeypatch):
    """The main process prints every error; another process its own only, not a copy rebuilt
    from the main process's error nor a note that a peer failed."""
    rebuilt = distributed._rebuilt(("ConfigError", "x is bad", "set x=1", 2))
    own = ConfigError("y is bad", "set y=1")
    monkeypatch.setenv("RANK", "1")
    assert distributed.own_error(own)
    assert not distributed.own_error(rebuilt)
    assert not distributed.own_error(distributed.peer_failed("training"))
    monkeypatch.setenv("RANK", "0")
    assert distributed.own_error(rebuilt) and distributed.own_error(distributed.peer_failed("x"))
