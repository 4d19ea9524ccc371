"""LocalStorage: roundtrips, batches, listings and atomic writes on a real directory."""

import os
import threading

import pytest

from normguide.data.storage import Storage, StorageError, exists_uri, read_bytes


def _tmp_files(root):
    return [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(".normguide-tmp")]


def test_open_normalises_root(tmp_path):
    assert Storage.open(str(tmp_path) + "/").root == str(tmp_path)
    assert Storage.open(f"file://{tmp_path}").root == str(tmp_path)
    rel = Storage.open("relative/out")
    assert os.path.isabs(rel.root) and rel.root.endswith("relative/out")
    assert not os.path.exists(rel.root)  # nothing created before a write or check


def test_roundtrip_and_uri(tmp_path):
    st = Storage.open(str(tmp_path / "run"))
    uri = st.write_bytes("images/c1/x.png", b"png")
    assert uri == st.uri("images/c1/x.png") == str(tmp_path / "run" / "images" / "c1" / "x.png")
    assert st.read_bytes("images/c1/x.png") == b"png"
    assert st.exists("images/c1/x.png") and not st.exists("images/c1/y.png") and not st.exists("images/c1")
    assert read_bytes(uri) == b"png" and exists_uri(uri) and not exists_uri(uri + ".no")
    st.write_bytes("images/c1/x.png", b"new")
    assert st.read_bytes("images/c1/x.png") == b"new"
    with pytest.raises(FileNotFoundError, match="y.png"):
        st.read_bytes("images/c1/y.png")
    with pytest.raises(ValueError, match=r"'\.\./x'"):
        st.write_bytes("../x", b"")
    with pytest.raises(ValueError, match="bytes"):
        st.write_bytes("a", "text")  # type: ignore[arg-type]


def test_write_many_existing_list(tmp_path):
    st = Storage.open(str(tmp_path))
    items = ((f"images/c{i % 3}/{i:04d}.png", i.to_bytes(4, "big")) for i in range(300))
    uris = st.write_many(items, batch_size=32)
    assert len(uris) == 300 and uris[7] == st.uri("images/c1/0007.png")
    st.write_bytes("run.json", b"{}")
    assert st.read_bytes("images/c2/0299.png") == (299).to_bytes(4, "big")
    keys = st.list("images/c0")
    assert keys == sorted(keys) and len(keys) == 100 and keys[0] == "images/c0/0000.png"
    assert st.list("images/c0/") == keys
    assert len(st.list("")) == 301 and st.list("nothing") == []
    asked = ["images/c0/0000.png", "images/c0/0001.png", "images/c1/0001.png", "run.json", "missing/x", "_SUCCESS"]
    assert st.existing(asked) == {"images/c0/0000.png", "images/c1/0001.png", "run.json"}
    st.delete(st.list("images/c0") + ["run.json", "missing/x"])  # absent keys are not an error
    assert st.list("images/c0") == [] and not st.exists("run.json") and len(st.list("")) == 200
    with pytest.raises(ValueError):
        st.delete(["../outside"])
    assert st.write_many([]) == []
    with pytest.raises(ValueError, match="batch_size"):
        st.write_many([("a", b"")], batch_size=0)


def test_write_many_consumes_lazily(tmp_path):
    st = Storage.open(str(tmp_path))
    produced = []

    def items():
        for i in range(10):
            produced.append(i)
            yield f"k/{i}", b"x"

    gen = items()
    st.write_many(gen, batch_size=4)
    assert produced == list(range(10)) and st.list("k") == sorted(f"k/{i}" for i in range(10))


def test_readers_never_see_partial_objects(tmp_path):
    st = Storage.open(str(tmp_path))
    payloads = [bytes([n]) * (1 << 20) for n in range(1, 5)]
    st.write_bytes("big.bin", payloads[0])
    stop = threading.Event()
    seen, listed = set(), set()

    def reader():
        while not stop.is_set():
            seen.add(st.read_bytes("big.bin"))
            listed.update(st.list(""))

    t = threading.Thread(target=reader)
    t.start()
    for i in range(40):
        st.write_bytes("big.bin", payloads[i % 4])
    stop.set()
    t.join()
    assert seen <= set(payloads)
    assert listed == {"big.bin"}
    assert _tmp_files(tmp_path) == []


def test_failed_write_leaves_nothing(tmp_path):
    st = Storage.open(str(tmp_path))
    st.write_bytes("a", b"file, not a directory")
    with pytest.raises(StorageError, match="a/b"):
        st.write_bytes("a/b", b"x")
    os.makedirs(tmp_path / "d" / "target")
    with pytest.raises(StorageError, match="target"):
        st.write_bytes("d/target", b"x")  # os.replace onto a directory fails
    assert _tmp_files(tmp_path) == [] and st.list("") == ["a"]


def test_check_writable(tmp_path):
    st = Storage.open(str(tmp_path / "new" / "root"))
    st.check_writable()
    assert os.path.isdir(st.root) and os.listdir(st.root) == []
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ValueError, match="not a directory"):
        Storage.open(str(tmp_path / "file")).check_writable()


def test_local_input_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        read_bytes(str(tmp_path / "nope.parquet"))
    with pytest.raises(ValueError, match="directory"):
        read_bytes(str(tmp_path))
    with pytest.raises(ValueError, match="gs://"):
        read_bytes("gs://b/k")
    with pytest.raises(ValueError, match="output root"):
        Storage.open("http://example.com/out")
