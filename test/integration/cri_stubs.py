"""Python stubs for the vendored CRI proto, generated with Debian's grpc_tools.

The client side of every integration test is Debian's python3-grpcio (gRPC
C-core): it shares no code with imagelet's server (Bun, grpc-js, protobufjs).
"""
import atexit
import importlib
import os
import re
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_cache = {}


def load(version="v1"):
    """Returns (api_pb2, api_pb2_grpc) for runtime.<version>."""
    if version in _cache:
        return _cache[version]
    from grpc_tools import protoc

    out = tempfile.mkdtemp(prefix=f"cri-{version}-")
    atexit.register(shutil.rmtree, out, True)
    src = os.path.join(ROOT, "proto", "runtime", version, "api.proto")
    pkg = os.path.join(out, f"cri_{version}")
    os.makedirs(pkg)
    with open(src) as f:
        text = f.read()
    # Debian's protoc (grpc-tools 1.51) predates the debug_redact field option;
    # it carries no wire meaning (see ../shared/cri/README.md).
    text = re.sub(r"\s*\[debug_redact = true\]", "", text)
    # v1alpha2 imports gogo.proto for Go code-generation options only (no wire meaning).
    text = re.sub(r'^import "github.com/gogo/protobuf/gogoproto/gogo.proto";\n', "", text, flags=re.M)
    text = re.sub(r"^option \(gogoproto\.[a-z_]+\)\s*=\s*[a-z]+;\n", "", text, flags=re.M)
    with open(os.path.join(pkg, "api.proto"), "w") as f:
        f.write(text)
    rc = protoc.main(["protoc", f"-I{out}", f"--python_out={out}", f"--grpc_python_out={out}", f"cri_{version}/api.proto"])
    if rc != 0:
        raise RuntimeError(f"protoc failed for {src}")
    open(os.path.join(pkg, "__init__.py"), "w").close()
    sys.path.insert(0, out)
    pb2 = importlib.import_module(f"cri_{version}.api_pb2")
    grpc_mod = importlib.import_module(f"cri_{version}.api_pb2_grpc")
    _cache[version] = (pb2, grpc_mod)
    return pb2, grpc_mod
