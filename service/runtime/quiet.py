"""TensorFlow's start-up noise, kept off the service's stderr.

The full TensorFlow wheel writes CUDA and XLA registration errors to file descriptor 2 from C++ while
it is imported, and the Flex delegate reports a failed ``cuInit`` when the first interpreter is made,
on machines without a GPU: before, and around, anything Python's logging or ``TF_CPP_MIN_LOG_LEVEL``
controls (hiding the GPUs does not stop them either). The service never uses a GPU, so those lines
say nothing; anything else written meanwhile is passed on.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

NOISE = re.compile(
    r"Unable to register cu(DNN|BLAS|FFT) factory"
    r"|computation placer already registered"
    r"|All log messages before absl::InitializeLog\(\) is called"
    r"|failed call to cuInit"
    r"|Could not find cuda drivers"
    r"|TF-TRT Warning"
    r"|oneDNN custom operations are on"
    r"|This TensorFlow binary is optimized to use available CPU instructions"
    r"|To enable the following instructions: .* rebuild TensorFlow"
    r"|Created TensorFlow Lite (XNNPACK )?delegate for"
    r"|TfLiteFlexDelegate delegate: \d+ nodes delegated"
)


@contextlib.contextmanager
def tensorflow_start_up_quiet() -> Iterator[None]:
    """Capture fd 2 for the block; then write back every line that is not TensorFlow's GPU noise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [
                line
                for line in capture.read().decode("utf-8", "replace").splitlines()
                if line.strip() and not NOISE.search(line)
            ]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
                sys.stderr.flush()
