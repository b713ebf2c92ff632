"""Old path of im2win_ort.measure.compare: `python -m im2win_ort.compare` and `import im2win_ort.compare` keep working."""

import sys

from .measure import compare as _moved

if __name__ == "__main__":
    raise SystemExit(_moved.main())
sys.modules[__name__] = _moved
