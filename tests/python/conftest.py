"""The lgms-edge binary (phantom frames) that these tests use, in the header."""

from lgms_models import phantom


def pytest_report_header(config):
    path = phantom.binary_path()
    try:
        phantom.require_binary()
    except phantom.BinaryNotFound as e:
        return [f"lgms-edge binary: MISSING; the tests that need phantom frames fail: {e}"]
    return [f"lgms-edge binary: {path}"]
