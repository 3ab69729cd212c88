"""Visual tokenizers: the error falls while fitting on synthetic ECG images, usage is reported, files round-trip,
and `encode` adds token grids to the shards deterministically."""
import io
import json
import tarfile

import numpy as np
import pytest
import torch
from helpers.mim_data import ecg_images, write_image_shards

from heartbeit.config import TokenizerConfig
from heartbeit.models.tokenizer import KMeansTokenizer, Tokenizer, codebook_usage
from heartbeit.train.batches import InMemoryBatches
from heartbeit.train.tokenizer_train import encode_shards, train_tokenizer


@pytest.fixture(scope="module")
def train_images():
    return ecg_images(256, 64, seed=0)


@pytest.fixture(scope="module")
def eval_images():
    return torch.from_numpy(ecg_images(48, 64, seed=1).copy())


@pytest.fixture(scope="module")
def kmeans(train_images, eval_images):
    cfg = TokenizerConfig(kind="kmeans", vocab_size=64, input_size=64, patch_size=8, kmeans_steps=40,
                          batch_size=32, eval_points=4)
    return train_tokenizer(cfg, InMemoryBatches(train_images, 32, seed=0), eval_images, progress=False)


def _check_metrics(metrics, vocab):
    hist = metrics["history"]
    assert len(hist) >= 3
    assert hist[-1]["recon_mse"] < hist[0]["recon_mse"]
    for key in ("perplexity", "dead_codes", "used_codes", "usage_fraction"):
        assert key in metrics["final"]
    assert 1.0 <= metrics["final"]["perplexity"] <= vocab
    assert metrics["final"]["used_codes"] + metrics["final"]["dead_codes"] == vocab
    json.dumps(metrics)  # machine-readable as is


def test_kmeans_error_falls_and_usage_reported(kmeans, eval_images):
    tok, metrics = kmeans
    _check_metrics(metrics, 64)
    assert metrics["final"]["used_codes"] > 32
    grid = tok.encode(eval_images)
    assert grid.shape == (48, 8, 8) and grid.dtype == torch.long and int(grid.max()) < 64


def test_vqvae_error_falls_and_codes_live(train_images, eval_images):
    cfg = TokenizerConfig(kind="vqvae", vocab_size=64, input_size=64, patch_size=8, steps=50, batch_size=16,
                          lr=2e-3, vq_hidden=16, vq_code_dim=16, eval_points=5)
    tok, metrics = train_tokenizer(cfg, InMemoryBatches(train_images, 16, seed=0), eval_images, progress=False)
    _check_metrics(metrics, 64)
    assert metrics["final"]["recon_mse"] < 0.6 * metrics["first"]["recon_mse"]
    assert metrics["final"]["used_codes"] >= 4  # dead-code restarts keep the codebook from collapsing to one code
    assert tok.encode(eval_images[:4]).shape == (4, 8, 8)


@pytest.mark.parametrize("kind", ["kmeans", "vqvae"])
def test_save_load_round_trip(tmp_path, kind, kmeans, eval_images):
    if kind == "kmeans":
        tok = kmeans[0]
    else:
        torch.manual_seed(0)
        from heartbeit.models.tokenizer import VQVAETokenizer

        tok = VQVAETokenizer(32, 64, 8, hidden=8, code_dim=8).eval()
        tok.training_step(eval_images[:8], torch.Generator().manual_seed(0))  # seeds the codebook
    path = tok.save(tmp_path / f"{kind}.safetensors")
    loaded = Tokenizer.load(path)
    assert type(loaded) is type(tok) and loaded.config() == tok.config()
    assert torch.equal(loaded.encode(eval_images), tok.encode(eval_images))


def test_load_rejects_foreign_files(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a HeartBEiT tokenizer"):
        Tokenizer.load(tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="junk.safetensors"):
        Tokenizer.load(tmp_path / "junk.safetensors")
    with pytest.raises(ValueError, match="safetensors"):
        KMeansTokenizer(4, 16, 8, centroids=torch.zeros(4, 64)).save(tmp_path / "x.pt")


def test_tokenizer_resizes_its_input(kmeans):
    tok = kmeans[0]
    big = torch.from_numpy(ecg_images(4, 128, seed=2).copy())
    assert tok.encode(big).shape == (4, 8, 8)


def test_codebook_usage_numbers():
    u = codebook_usage(torch.tensor([0, 1, 2, 3] * 10), 8)
    assert u["perplexity"] == pytest.approx(4.0) and u["dead_codes"] == 4 and u["used_codes"] == 4


def test_encode_shards_adds_grids_deterministically(tmp_path, kmeans):
    tok = kmeans[0]
    tok_file = tok.save(tmp_path / "tok.safetensors")
    images = ecg_images(40, 64, seed=3)
    digests = []
    for run in ("a", "b"):
        images_dir = tmp_path / run
        write_image_shards(images_dir, images, per_shard=16)
        result = encode_shards(images_dir, tok_file, batch_size=7, progress=False)
        assert result["encoded"] == 3 and result["grid"] == 8
        again = encode_shards(images_dir, tok_file, progress=False)  # rerun: everything is current
        assert again["encoded"] == 0 and again["skipped"] == 3
        digests.append(json.loads((images_dir / "tokens.json").read_text())["shards"])
    assert digests[0] == digests[1]  # identical bytes from identical inputs

    index = json.loads((tmp_path / "a" / "index.json").read_text())
    first = index["splits"]["train"]["shards"][0]
    with tarfile.open(tmp_path / "a" / first["name"]) as tar:
        names = tar.getnames()
        grid = np.load(io.BytesIO(tar.extractfile("train00000.tokens.npy").read()), allow_pickle=False)
    assert "train00000.png" in names and "train00000.tokens.npy" in names
    assert grid.dtype == np.int16 and grid.shape == (8, 8)
    assert np.array_equal(grid, tok.encode(torch.from_numpy(images[:1].copy()))[0].numpy())
    # the data loader reads the grids back
    from heartbeit.data.loading.loader import make_loader

    batch = next(iter(make_loader(tmp_path / "a", "train", batch_size=4, train=False, with_tokens=True)))
    assert batch["tokens"].shape == (4, 8, 8)


def test_encoding_as_an_array_over_shards_then_one_gather(tmp_path, kmeans):
    """Each array task encodes its own shards and leaves the index alone; the gather writes
    index.json and tokens.json once, with the same bytes as encoding everything in one process."""
    from heartbeit.train.tokenizer_train import gather_tokens

    tok_file = kmeans[0].save(tmp_path / "tok.safetensors")
    images = ecg_images(40, 64, seed=3)
    for run in ("serial", "array"):
        write_image_shards(tmp_path / run, images, per_shard=16)
    encode_shards(tmp_path / "serial", tok_file, progress=False)
    index_before = (tmp_path / "array" / "index.json").read_bytes()
    assert encode_shards(tmp_path / "array", tok_file, progress=False, task=(1, 2))["encoded"] == 1
    with pytest.raises(ValueError, match="2 shard\\(s\\) not encoded with this tokenizer yet"):
        gather_tokens(tmp_path / "array", tok_file)
    assert encode_shards(tmp_path / "array", tok_file, progress=False, task=(0, 2))["encoded"] == 2
    assert (tmp_path / "array" / "index.json").read_bytes() == index_before  # tasks never write the index
    assert not (tmp_path / "array" / "tokens.json").exists()
    gather_tokens(tmp_path / "array", tok_file)
    for name in ("index.json", "tokens.json"):
        assert (tmp_path / "array" / name).read_bytes() == (tmp_path / "serial" / name).read_bytes()


def _skewed_latents(step: int, n: int, dim: int, g: torch.Generator) -> torch.Tensor:
    """Encoder outputs like an ECG image's: ~80 % near one blank-paper latent, the rest around 64 trace
    shapes, all drifting slowly as the encoder trains."""
    centers = torch.randn(64, dim, generator=torch.Generator().manual_seed(1)) * 2
    drift = 0.05 * step
    which = torch.randint(0, 64, (n,), generator=g)
    z = centers[which] + 0.3 * torch.randn(n, dim, generator=g) + drift
    blank = torch.rand(n, generator=g) < 0.8
    z[blank] = 0.05 * torch.randn(int(blank.sum()), dim, generator=g) + drift
    return z


def test_restarts_per_step_stay_under_one_percent_at_the_papers_token_share():
    """The paper's ratio of tokens to codes (64 x 196 over 8192 = 1.5 per code per batch), scaled down: 8
    images x 196 tokens over 1024 codes. Each code restarts at most once per ln(1/r)/(1-decay) steps."""
    from heartbeit.models.tokenizer import EMAQuantizer

    vocab, dim, n = 1024, 8, 8 * 196
    q = EMAQuantizer(vocab, dim)
    g, gen = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    restarts, used = [], []
    for step in range(200):
        z = _skewed_latents(step, n, dim, g)
        if bool(q.initialized):
            min_dist, idx = q.distances(z).min(1)
        else:
            min_dist, idx = torch.ones(n), torch.zeros(n, dtype=torch.long)
        restarts.append(q.update(z, idx, min_dist, gen, restart_below=0.2))
        used.append(int(q.nearest(z).unique().numel()))
    windows = [sum(restarts[i:i + 25]) / 25 for i in range(0, len(restarts), 25)]
    assert max(windows) < 0.01 * vocab and max(restarts) < 0.02 * vocab  # a trickle, Poisson peaks aside
    assert sum(restarts) > 0 and min(used[30:]) >= 64  # codes do come back and cover the 64 trace shapes
