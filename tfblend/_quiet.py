"""Import TensorFlow once, without its start-up noise.

TensorFlow 2.17 prints cuDNN/cuFFT/cuBLAS factory "errors", oneDNN and CPU-feature notices and a
TF-TRT warning on every import, even on machines without a GPU. None of them is actionable for a
tfblend user, so this module (and only this module) silences them:

- ``TF_CPP_MIN_LOG_LEVEL`` defaults to ``3``: TensorFlow's C++ log lines are hidden (on CPU they
  are notices such as "oneDNN supports DT_BOOL only on platforms with AVX-512", logged at error
  level); every real failure still reaches Python as an exception with its message;
- the C-level stderr is redirected while ``tensorflow`` is first imported, and replayed in full
  if the import fails, so a genuinely broken install still explains itself.

Set ``TFBLEND_VERBOSE_IMPORT=1`` to see everything.

It also sets what must be set before TensorFlow's import: ``TF_ENABLE_ONEDNN_OPTS`` defaults to
``1``. TensorFlow 2.17 turns its oneDNN kernels on by default only on CPUs with AVX-512; on an
AVX2-only CPU they still make the students' float32 convolutions 1.2-1.6x faster, with results
as deterministic as the Eigen kernels' (measured on 2 AVX2 cores, 2026-12-05). Set it to ``0``
for Eigen.
"""

import os
import sys
import tempfile
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
# google-api-core (pulled by tf-models-official) warns about Python 3.11's end of life on import.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.api_core\..*")


def _import_tensorflow_quietly():
    if "tensorflow" in sys.modules or os.environ.get("TFBLEND_VERBOSE_IMPORT") == "1":
        import tensorflow

        return
    sys.stderr.flush()
    saved_fd = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        except BaseException:
            os.dup2(saved_fd, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved_fd, 2)
            os.close(saved_fd)


_import_tensorflow_quietly()
