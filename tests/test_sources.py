"""Models from where they live (`studies.sources`): hf: from directories written by
save_pretrained of models built from configs (no download), the vision zoos, and a
tt-forge-models loader. tt-forge-models is not on PyPI: `tests/forge_zoo` is a stand-in we
wrote to the interface its base.py documents, laid out as the zoo is (said there too)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from autotune import pytree
from autotune.backends import get_backend
from autotune.errors import UsageError
from autotune.study_options import StudyOptions
from search_spaces import default_space
from studies import PCC, discover_weights, get_study
from studies.sources import split_spec, with_options
from studies.sources.forge import ForgeStudy, mixed_precision_path
from tests.conftest import ROOT

transformers = pytest.importorskip("transformers", reason="the [hf] extra (in [test])")

TINY_BERT = dict(
    vocab_size=99,
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=32,
    max_position_embeddings=40,
    num_labels=3,
)
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *(f"w{i}" for i in range(60))]


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory) -> dict[str, Path]:
    """Directories of save_pretrained: a classifier with no tokenizer, one with a WordPiece
    tokenizer, and a base model (each built from a config, random weights)."""
    from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizer

    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    config = BertConfig(**TINY_BERT)
    BertForSequenceClassification(config).save_pretrained(root / "cls")
    BertForSequenceClassification(config).save_pretrained(root / "tok")
    (root / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    BertTokenizer(str(root / "vocab.txt")).save_pretrained(root / "tok")
    BertModel(config).save_pretrained(root / "base")
    return {name: root / name for name in ("cls", "tok", "base")}


def test_spec_options_round_trip_canonically_and_refuse_unknown_ones():
    spec = with_options("hf:./my model", seq_len=64, eval_data="/data/e v.pt")
    assert spec == with_options(with_options("hf:./my model", eval_data="/data/e v.pt"), seq_len=64)
    assert split_spec(spec) == ("hf:./my model", {"seq_len": 64, "eval_data": "/data/e v.pt"})
    assert with_options("mnist") == "mnist"
    with pytest.raises(UsageError, match="unknown option 'batch'"):
        split_spec("hf:x?batch=3")
    with pytest.raises(UsageError, match="seq_len must be an integer"):
        split_spec("hf:x?seq_len=many")


def test_study_options_fold_source_options_into_the_model_spec(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "eval.pt").write_bytes(b"")
    opts = StudyOptions(model="hf:./bert", seq_len=32, eval_data="eval.pt")
    assert opts.model == f"hf:./bert?eval_data={tmp_path / 'eval.pt'}&seq_len=32"
    assert opts.name == "hf:./bert-cpu"  # the options stay out of the study's name
    again = StudyOptions(**{**opts.shared(), "model": opts.model})  # as `from_study` does
    assert again.model == opts.model
    with pytest.raises(UsageError, match=r"--weights: no file missing\.pt"):
        StudyOptions(model="torchvision:resnet18", weights="missing.pt")


def test_a_source_refuses_options_it_does_not_use():
    with pytest.raises(UsageError, match="--weights does not apply to model 'hf:x'"):
        get_study("hf:x?weights=/w.pt")
    with pytest.raises(UsageError, match="--seq-len does not apply"):
        get_study(f"{ROOT}/studies/examples/token_classifier.py:STUDY?seq_len=8")
    with pytest.raises(UsageError, match="@variant is for tt-forge-models loaders"):
        get_study(f"{ROOT}/studies/examples/token_classifier.py:STUDY@big")


def test_hf_classifier_without_tokenizer_gets_token_ids_and_a_mask_of_seq_len(hf_dirs):
    study = get_study(f"hf:{hf_dirs['cls']}?seq_len=24")
    assert study.task == "sequence classification" and study.metric is None
    inputs, labels = study.eval_data()
    assert labels is None and set(inputs) == {"input_ids", "attention_mask"}
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    assert ids.dtype == mask.dtype == torch.int64 and ids.shape == (256, 24)
    assert ids.min() >= 0 and ids.max() < TINY_BERT["vocab_size"]
    lengths = mask.sum(1)
    assert lengths.min() >= 6 and lengths.max() == 24 and len(set(lengths.tolist())) > 5
    assert (ids[mask == 0] == 0).all()  # padding is the pad token
    assert torch.equal(
        ids, get_study(f"hf:{hf_dirs['cls']}?seq_len=24").eval_data()[0]["input_ids"]
    )
    out = pytree.call(study.build_model(), pytree.take(inputs, 0, 4))
    assert pytree.select_output(out, study.output).shape == (4, 3)  # logits


def test_hf_tokenizer_makes_the_inputs_when_the_model_has_one(hf_dirs):
    study = get_study(f"hf:{hf_dirs['tok']}?seq_len=16")
    inputs, _ = study.eval_data()
    assert set(inputs) == {"input_ids", "token_type_ids", "attention_mask"}
    ids = inputs["input_ids"]
    assert ids.shape == (256, 16)
    assert (ids[:, 0] == WORDS.index("[CLS]")).all()  # the tokenizer's own framing
    assert (ids == WORDS.index("[SEP]")).sum(1).eq(1).all()


def test_hf_base_model_is_scored_by_fidelity_and_says_so(hf_dirs):
    study = get_study(f"hf:{hf_dirs['base']}")
    assert study.task == "base model" and study.metric is PCC
    assert "fidelity against fp32" in study.notes()[0]
    assert study.eval_data()[0]["input_ids"].shape[1] == TINY_BERT["max_position_embeddings"]
    out = pytree.call(study.build_model(), pytree.take(study.eval_data()[0], 0, 2))
    assert pytree.select_output(out, study.output).shape == (2, 40, 16)  # last_hidden_state


def test_hf_dtype_map_is_one_dimension_per_role_without_embeddings(hf_dirs):
    study = get_study(f"hf:{hf_dirs['cls']}")
    weights = discover_weights(study.build_model())
    space = default_space(study, get_backend("cpu"), model=study.name, weights=weights)
    groups = space.weight_groups()
    assert set(groups) == {
        "bert.encoder.layer.*.attention.self.query.weight",
        "bert.encoder.layer.*.attention.self.key.weight",
        "bert.encoder.layer.*.attention.self.value.weight",
        "bert.encoder.layer.*.attention.output.dense.weight",
        "bert.encoder.layer.*.intermediate.dense.weight",
        "bert.encoder.layer.*.output.dense.weight",
        "bert.pooler.dense.weight",
        "classifier.weight",
    }


def test_a_linear_tied_to_an_embedding_is_not_lowered():
    from transformers import BertConfig, BertForMaskedLM

    model = BertForMaskedLM(BertConfig(**TINY_BERT))
    names = {w.name for w in discover_weights(model)}
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    assert not any("decoder" in n or "embeddings" in n for n in names)
    assert "cls.predictions.transform.dense.weight" in names


def test_hf_eval_data_file_with_labels_scores_top1(hf_dirs, tmp_path):
    ids = torch.randint(1, 99, (10, 8))
    torch.save(
        ({"input_ids": ids, "attention_mask": torch.ones_like(ids)}, ids[:, 0] % 3),
        tmp_path / "e.pt",
    )
    study = get_study(with_options(f"hf:{hf_dirs['cls']}", eval_data=str(tmp_path / "e.pt")))
    inputs, labels = study.eval_data()
    assert torch.equal(inputs["input_ids"], ids) and labels.tolist() == (ids[:, 0] % 3).tolist()
    assert study.scoring(labels is not None).name == "top-1 accuracy"


def test_hf_bad_directories_are_one_line_of_bad_input(tmp_path, cli):
    r = cli("study", "--model", "hf:./nothing", "--trials", "1")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "autotune: model 'hf:./nothing': no directory ./nothing (a save_pretrained one)"
    ]
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="cannot load the Hugging Face config of") as exc:
        get_study(f"hf:{tmp_path / 'empty'}").task  # noqa: B018
    assert "\n" not in str(exc.value)
    r = cli("study", "--model", "mnist", "--seq-len", "8", "--trials", "1")
    assert r.returncode == 2 and "--seq-len does not apply to model 'mnist'" in r.stderr


def _vision_usable() -> bool:
    try:
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError):
        return False
    return True


@pytest.mark.skipif(_vision_usable(), reason="torchvision imports here: the zoo test runs instead")
def test_vision_zoo_without_a_usable_torchvision_is_one_line_of_bad_input():
    study = get_study("torchvision:resnet18")
    assert "random weights" in study.notes()[0]
    with pytest.raises(UsageError, match="torchvision") as exc:
        study.build_model()
    assert "\n" not in str(exc.value)


@pytest.mark.skipif(
    not _vision_usable(),
    reason="needs the [vision] extra with a torchvision "
    "built for this torch (PyPI's is built for CUDA torch)",
)
def test_vision_zoo_model_with_weights_file_and_default_input_shape(tmp_path):
    import torchvision

    torch.manual_seed(1)
    trained = torchvision.models.squeezenet1_1()
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    study = get_study(with_options("torchvision:squeezenet1_1", weights=str(tmp_path / "w.pt")))
    assert study.notes() == [] and study.input_shape() == (3, 224, 224)
    model = study.build_model()
    assert torch.equal(model.features[0].weight, trained.features[0].weight)


# tt-forge-models loaders, through the stand-in zoo (see tests/forge_zoo/__init__.py).
LOADER = "tests.forge_zoo.tiny_mlp.pytorch.loader:ModelLoader"


def test_forge_loader_variant_inputs_tiled_unpacked_and_decoded():
    study = get_study(f"{LOADER}@wide")
    assert isinstance(study, ForgeStudy) and study.loader._variant == "wide"
    model = study.build_model()
    assert model.fc1.out_features == 96 and model.fc1.weight.dtype == torch.float32
    inputs, labels = study.eval_data()
    assert labels is None and inputs.shape == (16, 1, 8, 8)  # a batch of 1, tiled
    assert torch.equal(inputs[0], inputs[15])
    out = model(inputs[:2])
    assert torch.equal(pytree.select_output(out, study.output), out[0])  # unpacked
    assert str(study.output) == "unpack_forward_output"  # stable: in the reference's key
    assert study.decode(out) == f"predicted class: {int(out[0][0].argmax())}"
    assert get_study(LOADER).build_model().fc1.out_features == 32  # DEFAULT_VARIANT


def test_forge_loader_bad_variant_and_its_mixed_precision_path():
    with pytest.raises(UsageError, match=r"has no variant 'huge' \(variants: base, wide\)"):
        get_study(f"{LOADER}@huge")
    path = mixed_precision_path(f"{LOADER}@wide")
    assert (
        path == ROOT / "tests/forge_zoo/tiny_mlp/pytorch/mixed_precision_configs/tiny_mlp_wide.json"
    )
    with pytest.raises(UsageError, match="not a tt-forge-models loader"):
        mixed_precision_path("mnist")


def copy_zoo(tmp_path: Path) -> dict[str, str]:
    """The stand-in zoo copied under `tmp_path` (its map is written beside its loader), and
    the environment that imports it from there as `forge_zoo`."""
    shutil.copytree(ROOT / "tests" / "forge_zoo", tmp_path / "forge_zoo")
    return {"PYTHONPATH": f"{ROOT}:{tmp_path}"}


ARGS = (
    "--measure-seconds",
    "0.2",
    "--no-progress",
    "--seed",
    "0",
    "--stop-slower",
    "0",
    "--confirm",
    "1",
)
SMALL_SPACE = "batch_size = {min = 16, max = 32}\noptimization_level = [0]\n"


@pytest.mark.slow
def test_forge_loader_study_writes_its_map_where_the_loader_says(cli, tmp_path):
    env = copy_zoo(tmp_path)
    (tmp_path / "space.toml").write_text(SMALL_SPACE)
    spec = "forge_zoo.tiny_mlp.pytorch.loader:ModelLoader@wide"
    study = f"{spec}-cpu-emulate-tt"
    r = cli(
        "study",
        "--model",
        spec,
        "--emulate",
        "tt",
        "--trials",
        "3",
        "--no-starting-points",
        "--space",
        "space.toml",
        *ARGS,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert "16 eval rows without labels" in r.stderr and "metric PCC vs fp32" in r.stderr
    assert "decoded: predicted class: " in r.stderr  # decode_output, said once

    r = cli("export", "--study", study, "--format", "tt-mixed-precision", "--loader", spec, env=env)
    assert r.returncode == 0, r.stderr
    where = tmp_path / "forge_zoo/tiny_mlp/pytorch/mixed_precision_configs/tiny_mlp_wide.json"
    assert str(where) in r.stderr
    written = json.loads(where.read_text())
    assert cli("export", "--study", study, "-o", "best.json", env=env).returncode == 0
    exported = json.loads((tmp_path / "best.json").read_text())
    assert written == exported["weight_dtype_overrides"]
    assert written and set(written) <= {
        "fc1.weight",
        "fc2.weight",
        "head.weight",
    }  # the loader's names

    bad = cli("export", "--study", study, "--loader", spec, env=env)
    assert bad.returncode == 2 and "--loader is for --format tt-mixed-precision" in bad.stderr
    # The loader rebuilt from the export's spec in fresh processes; a model this small swings
    # its throughput 100x on a shared machine, so only the metric is held to the export here.
    v = cli(
        "verify", "best.json", "--trust-model", "--rounds", "1", "--max-slowdown", "0.999", env=env
    )
    assert v.returncode == 0, v.stdout + v.stderr


HF_EXAMPLE = ROOT / "studies" / "data" / "hf_bert_classifier"
HF_EVAL = ROOT / "studies" / "data" / "hf_bert_classifier_eval.pt"


@pytest.mark.slow
def test_shipped_bert_classifier_studies_exports_and_verifies(cli, tmp_path):
    (tmp_path / "space.toml").write_text(
        "batch_size = {min = 64, max = 128}\noptimization_level = [0]\n"
    )
    model = f"hf:{HF_EXAMPLE}"
    r = cli(
        "study",
        "--model",
        model,
        "--eval-data",
        str(HF_EVAL),
        "--trials",
        "3",
        "--space",
        "space.toml",
        *ARGS,
    )
    assert r.returncode == 0, r.stderr
    assert "inputs input_ids: int64[2, 32], attention_mask: int64[2, 32]" in r.stderr
    assert "1000 eval rows; 14 lowerable weights; metric top-1 accuracy" in r.stderr

    assert cli("export", "--study", f"{model}-cpu", "-o", "best.json").returncode == 0
    exported = json.loads((tmp_path / "best.json").read_text())
    assert exported["model"] == f"{model}?eval_data={HF_EVAL}"  # the options travel with it
    assert exported["metrics"]["reference_metric"] > 90  # trained: real top-1 on real labels
    roles = exported["weight_dtype_overrides"]  # one entry per role, as tt-xla globs
    assert len(roles) == 8 and "bert.encoder.layer.*.intermediate.dense.weight" in roles
    v = cli("verify", "best.json", "--rounds", "1", "--max-slowdown", "0.9")
    assert v.returncode == 0, v.stdout + v.stderr
    assert "top-1" in v.stdout


class _TorchvisionStandIn:
    """torchvision.models as far as the zoo source uses it (get_model, get_model_weights),
    for a process where PyPI's torchvision cannot load (it is built for CUDA torch)."""

    class _Weights:
        class DEFAULT:
            @staticmethod
            def transforms():
                return type("T", (), {"crop_size": [40]})()

    @staticmethod
    def get_model(name, weights=None):
        assert weights is None  # never a download
        if name != "tiny":
            raise ValueError(f"Unknown model {name}")
        return torch.nn.Sequential(
            torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 38 * 38, 5)
        )

    @classmethod
    def get_model_weights(cls, name):
        return cls._Weights


@pytest.mark.skipif(_vision_usable(), reason="torchvision imports here: the real test runs")
def test_vision_zoo_source_with_a_stand_in_torchvision(monkeypatch, tmp_path):
    from studies.sources import zoo

    monkeypatch.setattr(zoo, "import_zoo", lambda prefix: _TorchvisionStandIn)
    study = get_study("torchvision:tiny")
    assert study.input_shape() == (3, 40, 40)  # the default weights' crop size
    images, labels = study.eval_data()
    assert images.shape == (64, 3, 40, 40) and labels is None
    random = study.build_model()
    assert torch.equal(random[0].weight, get_study("torchvision:tiny").build_model()[0].weight)
    assert random(images[:2]).shape == (2, 5)
    torch.manual_seed(7)
    other = _TorchvisionStandIn.get_model("tiny")
    torch.save({"state_dict": other.state_dict()}, tmp_path / "w.pt")  # a checkpoint dict
    trained = get_study(with_options("torchvision:tiny", weights=str(tmp_path / "w.pt")))
    assert trained.notes() == []
    assert torch.equal(trained.build_model()[2].weight, other[2].weight)
    torch.save({"0.weight": other[0].weight}, tmp_path / "part.pt")
    with pytest.raises(RuntimeError, match="Missing key"):  # the file must fit the model
        get_study(with_options("torchvision:tiny", weights=str(tmp_path / "part.pt"))).build_model()
    with pytest.raises(ValueError, match="torchvision has no model 'huge'"):
        get_study("torchvision:huge").build_model()
