"""Captioning images from a checkpoint: scripts/caption.py, the `Captioner` API, and batch invariance."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from captioning.commands.caption import main as caption_main
from captioning.data.inputs import ImageInputs
from captioning.data.sources.synthetic import IMAGES_VERSION
from captioning.decoding import greedy_search
from captioning.evaluation.metrics import bleu
from captioning.inference.captioner import Caption, Captioner
from captioning.tasks import caption
from captioning.vocab import tokenize
from tests.conftest import CONF, FLICKR, ROOT
from tests.hostile.probe import run_command

SHAPE_WORDS = {"circle", "square", "triangle"}


def compose_caption(overrides: list[str]):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose("caption", overrides=overrides)


def builtin_test_split(synthetic_root: Path) -> tuple[list[Path], dict[str, list[str]]]:
    """Test images of the learned run's data set, and their reference captions by file name."""
    folder = synthetic_root / f"shapes-v{IMAGES_VERSION}-64px-3000-200-200-seed0"
    dataset = json.loads((folder / "captions_test.json").read_text())
    names = {image["id"]: image["file_name"] for image in dataset["images"]}
    references = {name: [] for name in names.values()}
    for annotation in dataset["annotations"]:
        references[names[annotation["image_id"]]].append(annotation["caption"])
    return [folder / "images" / name for name in sorted(references)], references


@pytest.fixture(scope="module")
def captioner(learned_run) -> Captioner:
    return Captioner.from_checkpoint(learned_run / "checkpoints" / "best.pt", device="cpu")


def test_find_images_takes_files_folders_globs_and_lists(tmp_path):
    for name in ("b.png", "a.jpg", ".hidden.png", "sub/c.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert ImageInputs.find(str(tmp_path)) == [tmp_path / "a.jpg", tmp_path / "b.png"]
    assert ImageInputs.find(str(tmp_path / "**" / "*.png")) == [tmp_path / "b.png", tmp_path / "sub" / "c.png"]
    assert ImageInputs.find([str(tmp_path / "b.png"), str(tmp_path / "sub")]) == [tmp_path / "b.png", tmp_path / "sub" / "c.png"]
    assert ImageInputs.find(str(tmp_path / "gone.png")) == [tmp_path / "gone.png"]  # reported when it fails to open


def test_caption_script_on_builtin_images(learned_run, synthetic_root, tmp_path, capsys):
    """The acceptance command, in process: captions of each image on stdout, alternatives in the JSON."""
    paths, references = builtin_test_split(synthetic_root)
    folder = tmp_path / "images"
    folder.mkdir()
    for path in paths[:100]:
        shutil.copy(path, folder)
    output = tmp_path / "captions.json"
    checkpoint = learned_run / "checkpoints" / "best.pt"
    cfg = compose_caption([f"checkpoint={checkpoint}", f"images={folder}", "device=cpu", "decode.beam_size=3",
                           "decode.n_best=3", f"output={output}"])
    results = caption(cfg)

    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [Path(path).name for path, _ in lines] == [path.name for path in paths[:100]]
    refs = [[tokenize(r) for r in references[Path(path).name]] for path, _ in lines]
    captions = [tokenize(caption) for _, caption in lines]
    beam = bleu(captions, refs)["BLEU-4"]
    # Correct means: as good as greedy decoding of the same model, and about *this* image (each caption
    # scores far lower against its neighbour's references).
    captioner = Captioner.from_checkpoint(checkpoint, device="cpu")
    memory = captioner.encode(torch.stack([captioner.read(p) for p in paths[:100]]))
    vocab = captioner.vocab
    greedy, _ = greedy_search(captioner.model.decoder, memory, start=vocab.start, end=vocab.end, max_tokens=21)
    assert beam >= bleu([vocab.decode_tokens(row) for row in greedy.tolist()], refs)["BLEU-4"] - 5
    assert beam - bleu(captions[1:] + captions[:1], refs)["BLEU-4"] >= 15

    saved = json.loads(output.read_text())["captions"]
    assert saved == results and [item["caption"] for item in saved] == [caption for _, caption in lines]
    for item in saved:
        alternatives = item["alternatives"]
        assert len(alternatives) == 2
        assert item["score"] >= alternatives[0]["score"] >= alternatives[1]["score"]
        assert len({item["caption"], *(alt["caption"] for alt in alternatives)}) == 3


def photo_jpegs(paths: list[Path]) -> list[tuple[str, bytes]]:
    """Two real photographs when the shared Flickr sample is here, else built-in images saved as JPEG."""
    if (FLICKR / "images").is_dir():
        return [(p.name, p.read_bytes()) for p in sorted((FLICKR / "images").glob("*.jpg"))[:2]]
    out = []
    for path in paths[:2]:
        buffer = io.BytesIO()
        Image.open(path).save(buffer, "JPEG")
        out.append((path.stem + ".jpg", buffer.getvalue()))
    return out


def run_script(*overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "caption.py"), "device=cpu", *overrides],
                          capture_output=True, text=True, env=env, timeout=300)


def test_caption_script_skips_bad_files_and_captions_the_rest(learned_run, synthetic_root, tmp_path):
    paths, _ = builtin_test_split(synthetic_root)
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = []
    for name, data in photo_jpegs(paths):
        (folder / name).write_bytes(data)
        good.append(name)
    (folder / "corrupt.jpg").write_bytes((folder / good[0]).read_bytes()[:400])
    (folder / "notes.txt").write_text("not an image\n")
    Image.open(paths[2]).convert("L").save(folder / "gray.png")
    Image.open(paths[3]).convert("RGBA").save(folder / "rgba.png")
    Image.open(paths[4]).convert("P").save(folder / "palette.png")
    Image.fromarray(np.asarray(Image.open(paths[5]).convert("L")).astype(np.uint16) * 257).save(folder / "deep.png")
    good += ["deep.png", "gray.png", "palette.png", "rgba.png"]

    result = run_script(f"checkpoint={learned_run / 'checkpoints' / 'best.pt'}",
                        f"images=[{folder},{tmp_path / 'missing.png'}]")
    assert result.returncode == 0, result.stderr
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert sorted(Path(path).name for path, _ in lines) == sorted(good)
    assert all(caption.split() for _, caption in lines)
    shapes = [caption for path, caption in lines if Path(path).suffix == ".png"]
    assert all(SHAPE_WORDS & set(caption.split()) for caption in shapes)
    for bad in ("corrupt.jpg", "notes.txt", "missing.png"):
        assert bad in result.stderr
    assert sum(line.startswith("skipped ") for line in result.stderr.splitlines()) == 3
    assert f"{len(good)} images captioned, 3 skipped" in result.stderr


def test_caption_script_fails_when_nothing_could_be_captioned(learned_run, tmp_path, capsys):
    """The script's own `main`, in this process (the test above starts the real script)."""
    (tmp_path / "notes.txt").write_text("not an image\n")
    cfg = compose_caption([f"checkpoint={learned_run / 'checkpoints' / 'best.pt'}", f"images={tmp_path}", "device=cpu"])
    result = run_command(lambda: caption_main(cfg))
    printed = capsys.readouterr()
    assert result.code != 0 and printed.out == ""
    assert "notes.txt" in printed.err and "nothing could be captioned" in result.message


def same(a: list[Caption], b: list[Caption]) -> bool:
    """Equal captions and alternatives; scores equal up to the float noise of different batch sizes."""
    texts = lambda captions: [[c.caption] + [x["caption"] for x in c.alternatives] for c in captions]  # noqa: E731
    scores = lambda captions: [s for c in captions for s in [c.score] + [x["score"] for x in c.alternatives]]  # noqa: E731
    return texts(a) == texts(b) and scores(a) == pytest.approx(scores(b), abs=1e-4)


def test_captioner_takes_paths_pil_images_and_tensors(captioner, synthetic_root):
    from captioning import Captioner as Exported

    assert Exported is Captioner
    paths, _ = builtin_test_split(synthetic_root)
    image = Image.open(paths[0]).convert("RGB")
    uint8 = pil_to_tensor(image)  # (3, H, W)
    by_path = captioner.caption(paths[0], beam_size=3, n_best=2)
    assert isinstance(by_path, Caption) and len(by_path.alternatives) == 1
    assert by_path.score >= by_path.alternatives[0]["score"]
    for same_image in (str(paths[0]), image, image.convert("RGBA"), uint8, uint8.float() / 255):
        assert same([captioner.caption(same_image, beam_size=3, n_best=2)], [by_path])
    batch = torch.stack([pil_to_tensor(Image.open(p).convert("RGB")) for p in paths[:4]])  # (4, 3, H, W)
    as_batch = captioner.caption(batch, beam_size=3, batch_size=3)
    assert same(as_batch, captioner.caption(paths[:4], beam_size=3))
    assert all(SHAPE_WORDS & set(c.caption.split()) for c in as_batch)


def test_decode_features_is_what_caption_uses(captioner, synthetic_root):
    paths, _ = builtin_test_split(synthetic_root)
    features = captioner.encode(torch.stack([captioner.read(p) for p in paths[:6]])).pooled  # (6, D)
    tokens, scores = captioner.decode_features(features, beam_size=4, n_best=2, length_penalty="avg")
    assert tokens.shape[:2] == (6, 2) and scores.shape == (6, 2)
    assert same(captioner.to_captions(tokens, scores),
                captioner.caption(paths[:6], beam_size=4, n_best=2, length_penalty="avg"))


@pytest.mark.parametrize("options", [{"beam_size": 3}, {"beam_size": 5, "n_best": 3, "length_penalty": "gnmt"}])
def test_each_image_decodes_the_same_alone_or_in_a_padded_batch_of_64(captioner, synthetic_root, options):
    paths, _ = builtin_test_split(synthetic_root)
    features = captioner.encode(torch.stack([captioner.read(p) for p in paths[:48]])).pooled  # (48, D)
    batch = torch.cat([features, torch.zeros(16, features.size(1))])  # 16 rows of padding
    batch = batch[torch.randperm(64, generator=torch.Generator().manual_seed(0))]
    tokens, scores = captioner.decode_features(batch, **options)
    for row in (0, 5, 17, 40, 63):
        alone_tokens, alone_scores = captioner.decode_features(batch[row:row + 1], **options)
        assert captioner.to_captions(alone_tokens, alone_scores)[0].caption == \
            captioner.to_captions(tokens[row:row + 1], scores[row:row + 1])[0].caption
        assert torch.allclose(alone_scores[0], scores[row], atol=1e-5)
        T = alone_tokens.size(2)
        assert torch.equal(alone_tokens[0], tokens[row, :, :T]) and (tokens[row, :, T:] == captioner.vocab.end).all()


def test_decoding_options_reach_the_captioner(captioner, synthetic_root):
    paths, _ = builtin_test_split(synthetic_root)
    greedy = captioner.caption(paths[:6], beam_size=1)
    # Nucleus sampling: a nucleus of one word is greedy search, n_best times; a seed fixes the draws.
    tiny = captioner.caption(paths[:6], top_p=1e-6, n_best=2)
    assert [c.caption for c in tiny] == [c.caption for c in greedy]
    assert all(c.alternatives[0]["caption"] == c.caption for c in tiny)
    drawn = [[c.caption] + [a["caption"] for a in c.alternatives]
             for c in captioner.caption(paths[:6], top_p=1.0, temperature=2.0, n_best=3, seed=5)]
    again = [[c.caption] + [a["caption"] for a in c.alternatives]
             for c in captioner.caption(paths[:6], top_p=1.0, temperature=2.0, n_best=3, seed=5)]
    assert drawn == again and len({text for texts in drawn for text in texts}) > 6
    # Diverse beam search with a strong penalty: every group starts its caption with its own word.
    for diverse in captioner.caption(paths[:4], beam_size=4, n_best=4, diversity_groups=4, diversity_strength=100.0):
        texts = [diverse.caption] + [a["caption"] for a in diverse.alternatives]
        assert len({text.split()[0] for text in texts}) == 4
    # Unigram blocking: no word twice in a caption.
    for blocked in captioner.caption(paths[:6], beam_size=3, block_ngram_repeat=1):
        words = blocked.caption.split()
        assert len(words) == len(set(words))
