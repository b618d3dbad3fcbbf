"""rlvr.images.tokenizers: a diffusers VQModel folder as VA-π's tokenizer encodes and decodes as VQModel's own
quantize + decode path does (with rlvr's [0, 1] pixels mapped to VQModel's [-1, 1]), in raster order, and saves and
reloads unchanged; a folder of no known format, another diffusers class or an image size the tokenizer cannot split
is one ConfigError line read from the config alone."""

import json

import pytest
import torch

from rlvr.config import ConfigError
from rlvr.images.tokenizers import DiffusersVQ, check_size, load_tokenizer, peek, tiny_vqmodel_config


def vqmodel(**over):
    from diffusers import VQModel

    torch.manual_seed(0)
    return VQModel(**tiny_vqmodel_config(**over)).eval()


@pytest.mark.parametrize("lookup", [False, True])
def test_a_diffusers_vqmodel_round_trip_is_its_own_quantize_and_decode(tmp_path, lookup):
    model = vqmodel(lookup_from_codebook=lookup)
    model.save_pretrained(tmp_path / "vq")
    vq = load_tokenizer(tmp_path / "vq", size=8)
    assert isinstance(vq, DiffusersVQ) and vq.tokens == 16 and vq.config.codes == 16  # (8 / 2)² codes of 16
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    codes = vq.encode(x)
    assert codes.shape == (3, 16) and codes.dtype == torch.long
    with torch.no_grad():
        h = model.encode(x * 2 - 1).latents  # (3, 4, 4, 4)
        want = model.decode(h).sample  # VQModel quantizes h itself, then decodes
        # raster order: code t is latent position (t // 4, t % 4), the codebook entry nearest to it
        dist = (h.permute(0, 2, 3, 1)[:, :, :, None] - model.quantize.embedding.weight).square().sum(-1)
    assert torch.equal(codes, dist.argmin(-1).flatten(1))
    torch.testing.assert_close(vq.decode(codes), ((want + 1) / 2).clamp(0, 1))
    vq.save(tmp_path / "again")
    torch.testing.assert_close(load_tokenizer(tmp_path / "again", size=8).decode(codes), vq.decode(codes))


def test_the_image_side_comes_from_the_run_and_must_split(tmp_path):
    vqmodel().save_pretrained(tmp_path)
    assert load_tokenizer(tmp_path, size=16).tokens == 64  # fully convolutional: any multiple of 2
    shape = peek(tmp_path)
    assert (shape.format, shape.codes, shape.downsample) == ("diffusers", 16, 2)
    with pytest.raises(ConfigError, match=r"data.size \(9\) must be a multiple of the diffusers tokenizer's "
                                          r"downsampling factor 2"):
        check_size(shape, 9)


def test_folders_of_no_known_format_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="holds no tokenizer: expected vq_config.json"):
        peek(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(ConfigError, match="is a diffusers 'UNet2DModel', not a VQModel"):
        peek(tmp_path)
