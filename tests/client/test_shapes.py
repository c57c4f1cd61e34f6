"""The client takes each model's image shape from the server (no server: the fakes of
fake.py and v2server.py): the metadata GET once per operation, a 3 x 40 x 40 colour
VAE's and a 1 x 28 x 28 model's inputs converted to the model's mode and size, v2
tensors [n, H, W] and [n, H, W, C], JSON pixels and PNGs, decode/sample answers as
L or RGB images, an old server's 404 (the fallback rule of client/metadata.py),
and metadata or answers of the wrong shape refused."""

from __future__ import annotations

import base64
import io
import json
import threading

import numpy as np
import pytest
import requests
from PIL import Image

from client import LatentClient, LatentServeError, ModelInfo, cli, cli_files
from client.inputs import as_items
from client.metadata import SHIPPED, SHIPPED_SHAPE
from client.metadata import parse as parse_metadata
from client.pixels import to_pixels
from paths import SHIPPED_MODELS, STORE
from tests.client.fake import Scripted
from tests.client.v2server import metadata_doc, read_request, write_response

PROTOCOLS = pytest.mark.parametrize("protocol", ["v2", "json"])
COLOUR = (3, 40, 40)
GRAY = (1, 28, 28)


def colour(**kwargs) -> Scripted:
    return Scripted(model="cats-vae", served_shape=COLOUR, **kwargs)


def rgb_noise(n, h=40, w=40, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


# ---- the metadata --------------------------------------------------------------
def test_model_info_is_fetched_once_per_operation_and_kept():
    client = colour(batch_size=4, concurrency=3)
    info = client.model_info()
    assert info == ModelInfo("cats-vae", "encode", "vae", 2, COLOUR, 255.0, "server")
    assert (info.mode, info.hw, info.array_shape, info.channels) == (
        "RGB",
        (40, 40),
        (40, 40, 3),
        3,
    )
    client.encode(rgb_noise(10))
    client.encode(rgb_noise(3))
    client.decode(np.zeros((9, 2)))
    client.sample(5, seed=1)
    client.decode(np.zeros((1, 2)))
    assert client.gets == ["encode", "decode", "sample"]
    assert client.stats.metadata == 3 and client.stats.requests == len(client.sent)
    assert "3x40x40 (RGB)" in client.model_info("decode").describe()
    with pytest.raises(ValueError, match="operation must be one of"):
        client.model_info("train")


def test_threads_asking_at_once_share_one_get():
    client = colour()
    entered, release = threading.Event(), threading.Event()
    get = client._get_once

    def slow_get(url):
        entered.set()
        release.wait(5)
        return get(url)

    client._get_once = slow_get
    infos = []
    threads = [threading.Thread(target=lambda: infos.append(client.model_info())) for _ in range(8)]
    for t in threads:
        t.start()
    entered.wait(5)
    release.set()
    for t in threads:
        t.join(5)
    assert len(infos) == 8 and len(set(infos)) == 1 and client.gets == ["encode"]


def test_the_metadata_get_is_retried_like_a_request():
    client = colour()
    answers = iter([(503, {}, b"busy"), requests.ConnectionError("refused")])
    get = client._get_once

    def flaky(url):
        step = next(answers, None)
        if isinstance(step, Exception):
            raise step
        return step or get(url)

    client._get_once = flaky
    assert client.model_info().image_shape == COLOUR
    assert client.stats.metadata == 3 and client.stats.retries == 2 and client.stats.requests == 0


def test_a_refused_metadata_get_is_the_servers_error():
    client = colour(metadata=(401, {}, b'{"code": 401, "type": "Unauthorized", "message": "no"}'))
    with pytest.raises(LatentServeError) as info:
        client.encode(rgb_noise(1))
    assert info.value.status == 401 and client.sent == []


# ---- a 1 x 28 x 28 and a 3 x 40 x 40 model, both protocols --------------------
@PROTOCOLS
def test_a_grayscale_model_gets_n_x_h_x_w_and_gives_l_images(protocol):
    client = Scripted(protocol=protocol, served_shape=GRAY)
    rgb = Image.fromarray(rgb_noise(1, 56, 40)[0], "RGB")
    client.encode([np.zeros((2, 28, 28), np.uint8), rgb, np.zeros((28, 28, 1), np.float32)])
    if protocol == "v2":
        assert [(s.shape, s.dtype) for s in client.sent] == [((4, 28, 28), "float32")]
    images = client.decode(np.zeros((2, 2)))
    assert [(im.mode, im.size) for im in images] == [("L", (28, 28))] * 2
    assert client.sample(3, seed=0, as_array=True).shape == (3, 28, 28)


@PROTOCOLS
def test_a_colour_model_gets_its_mode_and_size_from_every_kind_of_input(protocol, tmp_path):
    client = colour(protocol=protocol, batch_size=256)
    rgb = rgb_noise(2)
    gray = np.random.default_rng(1).integers(0, 256, (28, 28), dtype=np.uint8)
    path = tmp_path / "photo.jpg"
    Image.fromarray(rgb_noise(1, 90, 60)[0]).save(path, quality=90)
    rgba = Image.fromarray(rgb_noise(1, 50, 50)[0]).convert("RGBA")
    inputs = [
        rgb,  # N x H x W x 3 (as image libraries hold them)
        rgb.transpose(0, 3, 1, 2),  # N x 3 x H x W (as torch holds them)
        rgb[0],  # one H x W x 3 image
        gray,  # grayscale, another size: replicated to RGB, resized
        path,  # a JPEG file of another size
        rgba,  # transparency onto black
    ]
    client.encode(inputs)
    (sent,) = client.sent
    assert sent.items == 8
    converted = [to_pixels(x, COLOUR)[None] for x in (gray, path, rgba)]  # as the server would
    want = np.concatenate([rgb, rgb, rgb[:1], *converted])
    assert want.shape == (8, 40, 40, 3)
    if protocol == "v2":  # one UINT8 [n, 40, 40, 3] tensor
        doc, tensors = read_request(*client.protocol.encode_request(as_items(inputs), None, COLOUR))
        assert (
            doc["inputs"][0]["shape"] == [8, 40, 40, 3] and doc["inputs"][0]["datatype"] == "UINT8"
        )
        np.testing.assert_array_equal(tensors["image"], want)
    else:  # PNGs of the model's mode and size, except the small file: its own bytes
        body, _ = client.protocol.encode_request(as_items(inputs), None, COLOUR)
        instances = json.loads(body)["instances"]
        assert base64.b64decode(instances[6]["image_b64"]) == path.read_bytes()
        for i, inst in enumerate(instances):
            if i == 6:
                continue
            img = Image.open(io.BytesIO(base64.b64decode(inst["image_b64"])))
            assert (img.mode, img.size) == ("RGB", (40, 40)), i
            np.testing.assert_array_equal(np.asarray(img), want[i])


def test_colour_floats_travel_as_fp32_tensors_and_as_h_x_w_x_c_pixels():
    floats = np.random.default_rng(2).random((3, 40, 40, 3)).astype(np.float32)
    v2 = colour()
    v2.encode(floats)
    assert [(s.shape, s.dtype) for s in v2.sent] == [((3, 40, 40, 3), "float32")]
    doc, tensors = read_request(*v2.protocol.encode_request(floats, None, COLOUR))
    assert doc["inputs"][0]["datatype"] == "FP32" and np.array_equal(tensors["image"], floats)
    js = colour(protocol="json")
    body, _ = js.protocol.encode_request(floats, None, COLOUR)
    pixels = np.asarray([inst["pixels"] for inst in json.loads(body)["instances"]])
    assert pixels.shape == (3, 40, 40, 3) and np.array_equal(pixels.astype(np.float32), floats)
    with pytest.raises(LatentServeError, match=r"a float image must be 40 x 40 x 3"):
        v2.encode(np.zeros((40, 40), np.float32))


@PROTOCOLS
def test_a_colour_models_decode_and_sample_answer_rgb_images(protocol):
    client = colour(protocol=protocol, batch_size=3)
    images = client.decode(np.zeros((5, 2)))
    assert [(im.mode, im.size) for im in images] == [("RGB", (40, 40))] * 5
    assert images[0].getpixel((3, 3)) == (7, 7, 7)
    pixels = client.decode(np.zeros((2, 2)), as_array=True)
    assert pixels.shape == (2, 40, 40, 3) and pixels.dtype == np.float32
    samples = client.sample(4, seed=3)
    assert [(im.mode, im.size) for im in samples] == [("RGB", (40, 40))] * 4
    assert client.sample(2, seed=3, as_array=True).shape == (2, 40, 40, 3)


@PROTOCOLS
def test_answers_of_another_shape_than_the_models_are_refused(protocol):
    client = colour(protocol=protocol)
    if protocol == "v2":
        body, headers = write_response(
            "cats-vae-decode", {"image": np.zeros((1, 28, 28), np.uint8)}
        )
        client.script = [(200, headers, body)]
        with pytest.raises(
            LatentServeError, match=r"shape \[1, 28, 28\], expected \[1, 40, 40, 3\]"
        ):
            client.decode([[0.0, 0.0]])
    else:
        buf = io.BytesIO()
        Image.new("L", (40, 40)).save(buf, "PNG")
        png = base64.b64encode(buf.getvalue()).decode()
        client.script = [(200, {}, json.dumps({"predictions": [{"image_b64": png}]}).encode())]
        with pytest.raises(LatentServeError, match="image 0 is L 40x40, expected RGB 40x40"):
            client.decode([[0.0, 0.0]])
        flat = {"predictions": [{"pixels": np.zeros((40, 40)).tolist()}]}
        client.script = [(200, {}, json.dumps(flat).encode())]
        with pytest.raises(LatentServeError, match=r"pixels of shape \[1, 40, 40\], expected"):
            client.decode([[0.0, 0.0]], as_array=True)


@PROTOCOLS
def test_score_sends_the_models_shape(protocol):
    client = colour(protocol=protocol)
    sent = []

    def capture(url, body, headers):  # keep the request; answer 400 (not retried)
        sent.append((body, headers))
        return 400, {}, b'{"error": "stop"}'

    client._post_once = capture
    with pytest.raises(LatentServeError, match="stop"):
        client.score(rgb_noise(2, 20, 30))
    assert client.gets == ["score"]
    if protocol == "v2":
        _, tensors = read_request(*sent[0])
        assert tensors["image"].shape == (2, 40, 40, 3)
    else:
        inst = json.loads(sent[0][0])["instances"][0]
        assert Image.open(io.BytesIO(base64.b64decode(inst["image_b64"]))).size == (40, 40)


# ---- an old server: no metadata (404) --------------------------------------------
@PROTOCOLS
def test_an_old_server_serves_the_shipped_models_as_1_x_28_x_28(protocol):
    client = Scripted(protocol=protocol, model="fashion-vae-2d", metadata=404)
    info = client.model_info("decode")
    assert (info.image_shape, info.kind, info.latent_dim, info.source) == (
        SHIPPED_SHAPE, "vae", 2, "shipped"
    )  # fmt: skip
    assert "no metadata" in info.describe()
    assert [im.size for im in client.decode(np.zeros((2, 2)))] == [(28, 28)] * 2
    assert client.encode(np.zeros((3, 28, 28), np.uint8)).z_mean.shape == (3, 2)
    assert client.gets == ["decode", "encode"]


def test_an_old_server_and_another_model_is_a_clear_error_unless_the_shape_is_given():
    client = colour(metadata=404)
    with pytest.raises(
        LatentServeError, match="the server gives no metadata for cats-vae-encode"
    ) as info:
        client.encode(rgb_noise(1))
    err = info.value
    assert err.status == 404 and "image_shape=(C, H, W)" in str(err) and client.sent == []
    assert "Requested resource is not found" in err.message
    given = colour(metadata=404, image_shape=(3, 40, 40))
    assert given.model_info().source == "given" and given.model_info().kind is None
    given.encode(rgb_noise(2, 10, 10))
    assert given.sent[0].shape == (2, 40, 40, 3)
    with pytest.raises(ValueError, match="C must be 1"):
        LatentClient(image_shape=(2, 28, 28))


def test_a_given_shape_must_agree_with_the_servers():
    client = colour(image_shape=(1, 40, 40))
    with pytest.raises(
        LatentServeError, match=r"has image_shape \[3, 40, 40\], the client was given \[1, 40, 40\]"
    ):
        client.encode(rgb_noise(1))
    assert colour(image_shape=COLOUR).model_info().source == "server"


# ---- metadata that cannot be used -------------------------------------------------
def _doc(**params):
    doc = metadata_doc("cats-vae", "encode", COLOUR)
    doc["parameters"].update(params)
    return doc


BAD_METADATA = {
    "two channels": (_doc(image_shape=[2, 40, 40]), "C must be 1 .grayscale. or 3"),
    "no image_shape": (_doc(image_shape=None), "image_shape must be .C, H, W."),
    "two sizes": (_doc(image_shape=[40, 40]), "image_shape must be"),
    "a zero size": (_doc(image_shape=[3, 0, 40]), "image_shape must be"),
    "a float size": (_doc(image_shape=[3, 40.0, 40]), "image_shape must be"),
    "tensor disagrees": (
        {**_doc(), "inputs": [{"name": "image", "datatype": "UINT8", "shape": [-1, 40, 40]}]},
        r"tensor 'image' has shape \[-1, 40, 40\], but image_shape \[3, 40, 40\] means",
    ),
    "latent disagrees": (
        _doc(latent_dim=16),
        r"tensor 'z_mean' has shape \[-1, 2\], but latent_dim",
    ),
    "another operation": (_doc(operation="decode"), "parameters.operation is 'decode'"),
    "no parameters": ({"name": "cats-vae-encode"}, "no 'parameters' object"),
    "not an object": ([1, 2], "not a JSON object"),
    "bad latent_dim": (_doc(latent_dim=0), "latent_dim 0 is not a positive size"),
    "bad pixel_scale": (_doc(pixel_scale=-1), "pixel_scale -1 is not a positive number"),
}


@pytest.mark.parametrize("case", sorted(BAD_METADATA))
def test_metadata_of_a_bad_shape_is_a_clear_error(case):
    doc, says = BAD_METADATA[case]
    client = colour(metadata=doc)
    with pytest.raises(LatentServeError, match=says) as info:
        client.encode(rgb_noise(1))
    assert "the server's metadata for cats-vae-encode is not usable" in str(info.value)
    assert info.value.status == 200 and client.sent == []


def test_metadata_that_is_not_json_is_a_clear_error():
    client = colour(metadata=(200, {}, b"<html>"))
    with pytest.raises(LatentServeError, match="not a JSON object"):
        client.model_info()


def test_the_shipped_table_agrees_with_the_manifests():
    assert set(SHIPPED) == set(SHIPPED_MODELS), "client/metadata.py SHIPPED: update the copy"
    for name in SHIPPED_MODELS:
        manifest = json.loads((STORE / name / "manifest.json").read_text())
        got = (manifest["kind"], manifest["latent_dim"], tuple(manifest["image_shape"]))
        assert got == (*SHIPPED[name], SHIPPED_SHAPE), name


# ---- the command line ---------------------------------------------------------------
def test_grid_tiles_rgb_images_in_the_first_ones_mode():
    tiles = [Image.new("RGB", (3, 2), (200, 10, 10)), Image.new("L", (3, 2), 50)]
    out = cli_files.grid(tiles, cols=2, zoom=2)
    assert out.mode == "RGB" and out.size == (12, 4)
    assert out.getpixel((0, 0)) == (200, 10, 10) and out.getpixel((6, 0)) == (50, 50, 50)


@pytest.fixture
def colour_cli(monkeypatch):
    """`cli.main` with make_client building a colour Scripted from the parsed options;
    the fixture's (made clients, [metadata answer]) lets a test change the answer."""
    made, metadata = [], [True]

    def make(args):
        client = colour(
            protocol=args.protocol,
            batch_size=args.batch_size,
            image_shape=args.image_shape,
            metadata=metadata[0],
        )
        made.append(client)
        return client

    monkeypatch.setattr(cli, "make_client", make)
    return made, metadata


@PROTOCOLS
def test_cli_sample_and_decode_write_colour_pngs_and_channel_arrays(
    protocol, tmp_path, colour_cli, capsys
):
    common = ["--model", "cats-vae", "--protocol", protocol]
    assert (
        cli.main(["sample", "--n", "6", "--seed", "1", "--out", str(tmp_path / "g.png"), *common])
        == 0
    )
    grid = Image.open(tmp_path / "g.png")
    assert grid.mode == "RGB" and grid.size == (3 * 40, 2 * 40)
    assert cli.main(["sample", "--n", "6", "--out", str(tmp_path / "s.npy"), *common]) == 0
    assert np.load(tmp_path / "s.npy").shape == (6, 40, 40, 3)
    assert "6 x 40 x 40 x 3 float32" in capsys.readouterr().out
    out = tmp_path / "d.png"
    assert cli.main(["decode", "--z", "0,0", "--z", "1,1", "--out", str(out), *common]) == 0
    assert Image.open(out).mode == "RGB" and Image.open(out).size == (80, 40)


def test_cli_embed_a_folder_of_photos_and_info(tmp_path, colour_cli, capsys):
    made, metadata = colour_cli
    for cls in ("cat", "dog"):
        (tmp_path / "photos" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rgb_noise(1, 64, 48, seed=i)[0]).save(
                tmp_path / "photos" / cls / f"{i}.png"
            )
    argv = ["embed", str(tmp_path / "photos"), "--out", str(tmp_path / "e.npy"), "--quiet"]
    assert cli.main([*argv, "--model", "cats-vae", "--labels-out", str(tmp_path / "l.npy")]) == 0
    assert np.load(tmp_path / "e.npy").shape == (6, 2)
    assert made[-1].sent[0].shape == (6, 40, 40, 3)
    assert cli.main(["info", "--model", "cats-vae", "--operation", "sample"]) == 0
    out = capsys.readouterr().out
    assert "cats-vae-sample: vae, latent_dim 2, image 3x40x40 (RGB) (the server's metadata)" in out
    metadata[0] = 404
    assert cli.main(["info", "--model", "cats-vae"]) == 1
    assert "gives no metadata" in capsys.readouterr().err
    assert cli.main(["info", "--model", "cats-vae", "--image-shape", "3,40,40"]) == 0
    assert "given by the caller" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["info", "--image-shape", "2,4,4"])


@pytest.mark.parametrize("image_shape", [[1, 28, 28], [3, 40, 40], [3, 24, 64]])
@pytest.mark.parametrize("kind", ["vae", "ae"])
def test_the_servers_own_metadata_documents_read_back(image_shape, kind):
    """client/metadata.py against what serving/archive.py writes for the frontend agent
    (handlers/operations/metadata.py), in-process: every operation's document parses."""
    from handlers.manifest import ModelInfo as ServerModel
    from handlers.operations.metadata import v2_metadata

    manifest = {
        "name": "m",
        "kind": kind,
        "latent_dim": 16,
        "image_shape": image_shape,
        "pixel_scaling": {"divide_by": 255.0},
        "prior": {"type": "standard_normal"},
    }
    server = ServerModel.from_manifest(manifest)
    for operation in ("encode", "decode", "sample", "score"):
        doc = json.loads(json.dumps(v2_metadata(server, operation, f"served-{operation}")))
        info = parse_metadata(doc, "served", operation)
        assert (info.kind, info.latent_dim, info.image_shape) == (kind, 16, tuple(image_shape))


@pytest.mark.parametrize("shape", [GRAY, COLOUR])
def test_the_servers_own_reader_takes_the_clients_image_tensors(shape):
    """A request the client writes for a model of `shape` is what the server reads
    (handlers/wire/v2_read.py + inputs.py, in-process): items (n, C, H, W) of its pixels."""
    from handlers.limits import LIMITS
    from handlers.manifest import ModelInfo as ServerModel
    from handlers.wire.inputs import read_image_tensor
    from handlers.wire.request import RawRequest
    from handlers.wire.v2_read import read_call

    manifest = {
        "kind": "vae",
        "latent_dim": 2,
        "image_shape": list(shape),
        "pixel_scaling": {"divide_by": 255.0},
        "prior": {"type": "standard_normal"},
    }
    server = ServerModel.from_manifest(manifest)
    photos = [Image.fromarray(rgb_noise(1, 50, 30, seed=k)[0]) for k in range(3)]
    client = Scripted(served_shape=shape)
    body, headers = client.protocol.encode_request(photos, None, shape)
    lower = {k.lower(): v for k, v in headers.items()}
    call = read_call(RawRequest(body, headers["Content-Type"], "v2", lower), LIMITS)
    items = read_image_tensor(server, LIMITS.for_image(shape), call.inputs, "encode").numpy()
    pixels = np.stack([to_pixels(p, shape) for p in photos]).astype(np.float32) / 255
    want = pixels[:, None] if shape[0] == 1 else pixels.transpose(0, 3, 1, 2)
    np.testing.assert_allclose(items, want, atol=1e-7)
