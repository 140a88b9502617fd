"""Forged passes (issue 10): a program whose honest tests fail must never get ``pass``.

Each attack is one program (code written by an adversary; the tests are honest and fixed),
verified between honest controls in the same batch: a correct program before it passes,
a wrong one after it fails, and a correct one after that passes, so nothing an attack
does leaks into the programs around it. The attacks are spelled to get past the static
rule (``__import__('unit' + 'test')`` ...) unless the static rule is what is tested.
Then: honest programs that do what the hardening must not mistake for an attack.
"""

from __future__ import annotations

import ast
import textwrap

import pytest

from conftest import unit_tests
from sandbox.static import find_tampering

RIGHT = "def answer():\n    return 42\n"
WRONG = "def answer():\n    return 0\n"
ANSWER_TESTS = unit_tests("self.assertEqual(answer(), 42)", "self.assertEqual(answer() + 1, 43)")


def verify_between_controls(sandbox, code: str, tests: str = ANSWER_TESTS):
    """The verdict on ``(code, tests)``, run between honest controls that must hold."""
    programs = [(RIGHT, ANSWER_TESTS), (textwrap.dedent(code), tests), (WRONG, ANSWER_TESTS), (RIGHT, ANSWER_TESTS)]
    before, result, wrong, after = sandbox.verify(programs)
    assert (before.status, wrong.status, after.status) == ("pass", "fail", "pass")
    return result


# --------------------------------------------------------------------------- a pass needs a normal return


@pytest.mark.parametrize(
    "find",
    [
        "[c for c in Exception.__subclasses__() if c.__name__ == '_ShouldStop'][0]",
        "getattr(__import__('sys').modules['unit' + 'test.case'], '_Should' + 'Stop')",
    ],
)
def test_raising_unittests_internal_should_stop_is_not_a_pass(sandbox, find):
    code = f"def answer():\n    raise {find}()\n"
    result = verify_between_controls(sandbox, code)
    assert (result.status, result.tests_passed) == ("fail", 0)


def test_marking_every_test_an_expected_failure_is_rejected(sandbox):
    code = """
    case = getattr(__import__('unit' + 'test'), 'Test' + 'Case')
    setattr(case, '__unittest_expecting' + '_failure__', True)

    def answer():
        return 0
    """
    result = verify_between_controls(sandbox, code)
    assert (result.status, result.reason) == ("rejected", "tampered_test_machinery")


def test_an_expected_failure_in_the_tests_is_not_a_pass(sandbox):
    tests = unit_tests("self.assertEqual(answer(), 42)") + (
        "\n\nclass MoreCases(unittest.TestCase):\n"
        "    @unittest.expectedFailure\n"
        "    def test_known_bug(self):\n"
        "        self.assertEqual(answer(), 43)\n"
    )
    result = verify_between_controls(sandbox, RIGHT, tests)
    assert (result.status, result.tests_passed) == ("fail", 1)


def test_a_skipped_test_is_not_a_pass(sandbox):
    code = "import unittest as u\n\ndef answer():\n    raise getattr(u, 'Skip' + 'Test')('not today')\n"
    result = verify_between_controls(sandbox, code)
    assert (result.status, result.tests_passed) == ("fail", 0)


# --------------------------------------------------------------------------- the test machinery


EQUAL_AND_SUBTESTS = unit_tests(
    "self.assertEqual(answer(), 42)",
    "for x in (1, 2):\n    with self.subTest(x=x):\n        self.assertEqual(answer() + x, 42 + x)",
)
RAISES = unit_tests("with self.assertRaises(ValueError):\n    answer()")


@pytest.mark.parametrize(
    "patch, tests",
    [
        (  # a new __getattribute__ on TestCase turns every assert into a no-op
            """
            case = getattr(__import__('unit' + 'test'), 'Test' + 'Case')
            def quiet(self, name):
                value = object.__getattribute__(self, name)
                return (lambda *a, **k: None) if name.startswith('assert') else value
            setattr(case, '__getattri' + 'bute__', quiet)
            """,
            EQUAL_AND_SUBTESTS,
        ),
        (  # a new __call__ on TestSuite reports every test as passed
            """
            suite = getattr(__import__('unit' + 'test'), 'Test' + 'Suite')
            def run_all(self, result, debug=False):
                for test in self:
                    result.startTest(test)
                    result.addSuccess(test)
                    result.stopTest(test)
                return result
            setattr(suite, '__ca' + 'll__', run_all)
            """,
            EQUAL_AND_SUBTESTS,
        ),
        (  # unittest's _Outcome, replaced by one that swallows every failure
            """
            import contextlib
            case = __import__('unit' + 'test.case').case
            class Outcome:
                def __init__(self, result=None):
                    self.result, self.success, self.expecting_failure = result, True, False
                    self.result_supports_subtests, self.expectedFailure, self.skipped, self.errors = False, None, [], []
                @contextlib.contextmanager
                def testPartExecutor(self, *args, **kwargs):
                    try:
                        yield
                    except Exception:
                        pass
            setattr(case, '_Out' + 'come', Outcome)
            """,
            EQUAL_AND_SUBTESTS,
        ),
        (  # contextlib's generator context manager, whose __exit__ now swallows everything
            """
            manager = getattr(__import__('context' + 'lib'), '_GeneratorContext' + 'Manager')
            setattr(manager, '__ex' + 'it__', lambda self, *exc: True)
            """,
            EQUAL_AND_SUBTESTS,
        ),
        (  # the generator behind TestCase.subTest, swapped in its closure
            """
            case = getattr(__import__('unit' + 'test'), 'Test' + 'Case')
            def quiet(self, msg=None, **params):
                try:
                    yield
                except Exception:
                    pass
            getattr(case, 'sub' + 'Test').__closure__[0].cell_contents = quiet
            """,
            unit_tests("for x in (1, 2):\n    with self.subTest(x=x):\n        self.assertEqual(answer() + x, 42 + x)"),
        ),
        (  # assertRaises' context manager, whose __exit__ now accepts "nothing raised"
            """
            context = getattr(__import__('unit' + 'test.case').case, '_AssertRaises' + 'Context')
            setattr(context, '__ex' + 'it__', lambda self, *exc: True)
            """,
            RAISES,
        ),
    ],
    ids=[
        "testcase-getattribute",
        "testsuite-call",
        "outcome",
        "generator-context-manager",
        "subtest-closure",
        "assert-raises",
    ],
)
def test_changing_the_test_machinery_is_rejected(sandbox, patch, tests):
    code = textwrap.dedent(patch) + "\n\ndef answer():\n    return 0\n"
    result = verify_between_controls(sandbox, code, tests)
    assert (result.status, result.reason) == ("rejected", "tampered_test_machinery")


def test_a_builtins_hook_that_restores_itself_is_rejected(sandbox):
    code = """
    b = __import__('built' + 'ins')
    real = b.__build_class__
    def hook(func, name, *bases, **kwargs):
        cls = real(func, name, *bases, **kwargs)
        if name == 'TestCases':
            for attr in list(vars(cls)):
                if attr.startswith('test'):
                    setattr(cls, attr, lambda self: None)
            setattr(b, '__build' + '_class__', real)
        return cls
    setattr(b, '__build' + '_class__', hook)

    def answer():
        return 0
    """
    result = verify_between_controls(sandbox, code)
    assert (result.status, result.reason) == ("rejected", "tampered_builtins")


@pytest.mark.parametrize(
    "name, call", [("all", "all(v == 42 for v in [answer()])"), ("isinstance", "isinstance(answer(), str)")]
)
def test_rebinding_the_modules_builtins_to_a_private_dict_is_rejected(sandbox, name, call):
    code = f"""
    private = dict(vars(__import__('built' + 'ins')))
    private['{name}'] = lambda *a: True
    globals()['__buil' + 'tins__'] = private

    def answer():
        return 0
    """
    result = verify_between_controls(sandbox, code, unit_tests(f"self.assertTrue({call})"))
    assert (result.status, result.reason) == ("rejected", "tampered_builtins")


def test_replacing_a_later_test_method_from_an_earlier_test_is_rejected(sandbox):
    code = """
    def answer():
        globals()['Test' + 'Cases'].test_1 = lambda self: None
        return 42

    def other():
        return 0
    """
    tests = unit_tests("self.assertEqual(answer(), 42)", "self.assertEqual(other(), 1)")
    result = verify_between_controls(sandbox, code, tests)
    assert (result.status, result.reason) == ("rejected", "tampered_test_machinery")


def test_rebasing_the_test_class_from_a_test_is_rejected(sandbox):
    code = """
    ut = __import__('unit' + 'test')

    class Lenient(ut.TestCase):
        def assertEqual(self, *args, **kwargs):
            pass

    def answer():
        globals()['Test' + 'Cases'].__bases__ = (Lenient,)
        return 42

    def other():
        return 0
    """
    tests = unit_tests("self.assertEqual(answer(), 42)", "self.assertEqual(other(), 1)")
    result = verify_between_controls(sandbox, code, tests)
    assert (result.status, result.reason) == ("rejected", "tampered_test_machinery")


# --------------------------------------------------------------------------- what the tests call

NUMPY_TESTS = "import numpy as np\n" + unit_tests("np.testing.assert_allclose(answer(), 42.0)")
PANDAS_TESTS = "import pandas as pd\n" + unit_tests(
    "pd.testing.assert_frame_equal(answer(), pd.DataFrame({'a': [42]}))"
)
MATH_TESTS = "import math\n" + unit_tests("self.assertTrue(math.isclose(answer(), 42))")
JSON_TESTS = "import json\n" + unit_tests("self.assertEqual(json.loads(answer()), {'a': 42})")
FROM_TESTS = "from numpy.testing import assert_allclose\n" + unit_tests("assert_allclose(answer(), 42.0)")
FILE_TESTS = "import os\n" + unit_tests("answer()\nself.assertTrue(os.path.exists('out.txt'))")


@pytest.mark.parametrize(
    "code, tests",
    [
        (
            "setattr(getattr(__import__('num' + 'py'), 'test' + 'ing'), 'assert_' + 'allclose', lambda *a, **k: None)\n"
            "def answer():\n    return 0.0\n",
            NUMPY_TESTS,
        ),
        (
            "setattr(getattr(__import__('pan' + 'das'), 'test' + 'ing'), 'assert_frame' + '_equal', lambda *a, **k: None)\n"
            "def answer():\n    return None\n",
            PANDAS_TESTS,
        ),
        (
            "setattr(__import__('ma' + 'th'), 'is' + 'close', lambda *a, **k: True)\ndef answer():\n    return 0\n",
            MATH_TESTS,
        ),
        (
            "setattr(__import__('js' + 'on'), 'lo' + 'ads', lambda s: {'a': 42})\ndef answer():\n    return '{}'\n",
            JSON_TESTS,
        ),
        (
            "import types\nfake = types.ModuleType('numpy.testing')\nfake.assert_allclose = lambda *a, **k: None\n"
            "getattr(__import__('s' + 'ys'), 'mod' + 'ules')['numpy.testing'] = fake\n"
            "def answer():\n    return 0.0\n",
            FROM_TESTS,
        ),
        (
            "import types\nt = getattr(__import__('num' + 'py'), 'test' + 'ing')\n"
            "class Lenient(types.ModuleType):\n"
            "    def __getattribute__(self, name):\n"
            "        return (lambda *a, **k: None) if name.startswith('assert') else super().__getattribute__(name)\n"
            "t.__class__ = Lenient\n"
            "def answer():\n    return 0.0\n",
            NUMPY_TESTS,
        ),
        (
            "setattr(getattr(__import__('o' + 's'), 'pa' + 'th'), 'exi' + 'sts', lambda p: True)\n"
            "def answer():\n    return None\n",
            FILE_TESTS,
        ),
    ],
    ids=["np.testing", "pd.testing", "math.isclose", "json.loads", "sys.modules-swap", "module-class", "os.path"],
)
def test_patching_what_the_tests_call_is_rejected(sandbox, code, tests):
    result = verify_between_controls(sandbox, code, tests)
    assert (result.status, result.reason) == ("rejected", "tampered_test_machinery")


# --------------------------------------------------------------------------- the runner's own output


def test_wrapping_os_write_cannot_rewrite_the_result(sandbox):
    code = """
    os = __import__('o' + 's')
    real = os.write
    def forge(fd, data):
        data = bytes(data).replace(b'"fail"', b'"pass"').replace(b"'fail'", b"'pass'")
        return real(fd, data)
    setattr(os, 'wri' + 'te', forge)

    def answer():
        return 0
    """
    result = verify_between_controls(sandbox, code)
    assert (result.status, result.tests_passed) == ("fail", 0)


def test_replacing_the_json_encoder_cannot_rewrite_the_result(sandbox):
    code = """
    json = __import__('js' + 'on')
    class Liar(json.JSONEncoder):
        def encode(self, o):
            if isinstance(o, dict) and 'records' in o:
                o = dict(o, records=[[r[0], 'pass', ''] for r in o['records']], tamper=[])
            return super().encode(o)
    setattr(json, '_default_' + 'encoder', Liar())

    def answer():
        return 0
    """
    result = verify_between_controls(sandbox, code)
    assert (result.status, result.tests_passed) == ("fail", 0)


# --------------------------------------------------------------------------- introspection

FORGE = """
    import json, os
    def forge(fd, nonce):
        out = {"load_error": None, "load_error_kind": None, "started": 2, "tamper": [],
               "records": [["program.TestCases.test_0", "pass", ""], ["program.TestCases.test_1", "pass", ""]]}
        os.write(fd, nonce + json.dumps(out).encode())
        os._exit(0)
    def search(frame):
        while frame is not None:
            found = dict(frame.f_locals)
            if isinstance(found.get("nonce"), bytes) and isinstance(found.get("result_fd"), int):
                forge(found["result_fd"], found["nonce"])
            frame = frame.f_back
"""


@pytest.mark.parametrize(
    "reach",
    [
        "search(__import__('sys')._getframe(1))",
        "search(__import__('inspect').currentframe())",
        "search(__import__('inspect').stack()[1].frame)",
        "for frame in __import__('sys')._current_frames().values():\n    search(frame)",
        "search(next(__import__('traceback').walk_stack(None))[0])",
        "try:\n    1 / 0\nexcept ZeroDivisionError as exc:\n    search(exc.__traceback__.tb_frame)",
    ],
    ids=[
        "sys._getframe",
        "inspect.currentframe",
        "inspect.stack",
        "sys._current_frames",
        "traceback.walk_stack",
        "tb_frame",
    ],
)
def test_the_nonce_cannot_be_read_from_frames(sandbox, reach):
    code = textwrap.dedent(FORGE) + "\ndef answer():\n" + textwrap.indent(reach, "    ") + "\n    return 0\n"
    result = verify_between_controls(sandbox, code)
    assert (result.status, result.tests_passed) == ("fail", 0)


def test_expecting_failure_cannot_be_set_through_a_frame(sandbox):
    code = """
    import inspect
    def answer():
        frame = inspect.currentframe()
        while frame is not None:
            outcome = frame.f_locals.get('outcome')
            if outcome is not None and hasattr(outcome, 'expecting_failure'):
                outcome.expecting_failure = True
            frame = frame.f_back
        return 0
    """
    result = verify_between_controls(sandbox, code)
    assert (result.status, result.tests_passed) == ("fail", 0)


def test_expecting_failure_cannot_be_set_by_a_trace_function(sandbox):
    code = """
    import sys
    def tracer(frame, event, arg):
        outcome = frame.f_locals.get('outcome')
        if outcome is not None and hasattr(outcome, 'expecting_failure'):
            outcome.expecting_failure = True
        return tracer
    def answer():
        sys.settrace(tracer)
        return 0
    """
    result = verify_between_controls(sandbox, code)
    assert (result.status, result.tests_passed) == ("fail", 0)


def test_the_live_result_cannot_be_found_through_gc(sandbox):
    code = """
    import gc
    class Passing(list):
        def append(self, record):
            super().append([record[0], 'pass', ''])
    def answer():
        for obj in gc.get_objects():
            if hasattr(obj, 'records') and isinstance(obj.records, list):
                obj.records = Passing(obj.records)
        return 0
    """
    result = verify_between_controls(sandbox, code)
    assert (result.status, result.tests_passed) == ("fail", 0)


def test_asserts_cannot_be_shadowed_on_the_test_case_through_a_frame(sandbox):
    code = """
    import inspect
    def answer():
        for info in inspect.stack():
            test = info.frame.f_locals.get('self')
            if hasattr(test, 'assertEqual'):
                test.assertEqual = lambda *a, **k: None
        return 0
    """
    tests = unit_tests(
        "value = answer()\nself.assertEqual(value, 42)", "value = answer() + 1\nself.assertEqual(value, 43)"
    )
    result = verify_between_controls(sandbox, code, tests)
    assert result.status in ("fail", "rejected") and result.tests_passed == 0


# --------------------------------------------------------------------------- the static rule


@pytest.mark.parametrize(
    "code",
    [
        "import unittest.mock\n\ndef answer():\n    return unittest.mock.ANY\n",
        "from unittest.mock import ANY\n\ndef answer():\n    return [ANY][0]\n",
        "class Anything:\n    __eq__ = lambda self, other: True\n\ndef answer():\n    return Anything()\n",
        "class Anything:\n    def __eq__(self, other):\n        return 1\n\ndef answer():\n    return Anything()\n",
        "Anything = type('Anything', (), {'__eq__': lambda s, o: 'yes'})\n\ndef answer():\n    return Anything()\n",
        "from unittest import mock\n\ndef answer():\n    m = mock.MagicMock()\n    m.__eq__.return_value = True\n    return m\n",
    ],
    ids=["mock.ANY", "from-mock-import-ANY", "lambda-eq", "eq-returns-1", "type-dict", "magicmock-eq"],
)
def test_objects_equal_to_everything_are_rejected_before_running(sandbox, code):
    result = verify_between_controls(sandbox, code)
    assert (result.status, result.reason, result.duration_s) == ("rejected", "always_equal_object", 0.0)


@pytest.mark.parametrize(
    "code",
    [
        "import numpy as np\nnp.testing.assert_allclose = lambda *a, **k: None\n",
        "import numpy.testing as npt\nnpt.assert_allclose = lambda *a, **k: None\n",
        "from numpy import testing\ntesting.assert_allclose = print\n",
        "import pandas as pd\ndef f():\n    pd.testing.assert_frame_equal = lambda *a, **k: None\n",
        "import math\nmath.isclose = lambda *a, **k: True\n",
        "import json as j\nsetattr(j, 'loads', lambda s: {})\n",
        "import math\nvars(math)['isclose'] = max\n",
        "import math\nmath.__dict__.update(isclose=max)\n",
        "m = __import__('math')\nm.isclose = max\n",
        "import os\nos.path.exists = lambda p: True\n",
    ],
)
def test_replacing_an_imported_modules_functions_is_found_in_any_spelling(code):
    found = find_tampering(ast.parse(code))
    assert found is not None and found.reason == "patches_module"


@pytest.mark.parametrize(
    "code",
    [
        "import sys\nm = sys.modules\nm['numpy.testing'] = None\n",
        "import sys\nmods = getattr(sys, 'modules')\nmods.update({'json': None})\n",
        "import sys as s\nd = vars(s)['modules']\ndel d['json']\n",
        "import sys\n(m := sys.__dict__['modules']).pop('json')\n",
    ],
)
def test_writing_sys_modules_through_an_alias_is_found(code):
    found = find_tampering(ast.parse(code))
    assert found is not None and found.reason == "patches_sys_modules"


@pytest.mark.parametrize(
    "code",
    [
        "import pandas as pd\npd.options.display.max_rows = 5\npd.options.mode.chained_assignment = None\n",
        "import os\nos.environ['X'] = '1'\n",
        "import matplotlib\nmatplotlib.rcParams['figure.figsize'] = (3, 3)\n",
        "import sys, io\ndef f():\n    sys.stdout = io.StringIO()\n    sys.argv = ['prog']\n",
        "import decimal\ndecimal.getcontext().prec = 50\n",
        "class P:\n    def __eq__(self, other):\n        return isinstance(other, P) and self.x == other.x\n",
        "class P:\n    def __eq__(self, other):\n        return NotImplemented\n",
        "import logging\nlogging.getLogger(__name__).level = 10\n",
    ],
)
def test_honest_settings_and_comparisons_are_not_tampering(code):
    assert find_tampering(ast.parse(code)) is None


# --------------------------------------------------------------------------- no false alarms

HONEST = {
    "scipy-submodule": (
        "import scipy\nimport scipy.stats\n\ndef answer():\n    return round(float(scipy.stats.norm.cdf(0)) * 84)\n",
        None,
    ),
    "pandas-options-environ-rcparams": (
        "import os\nimport matplotlib\nimport pandas as pd\n"
        "pd.options.display.max_rows = 5\npd.options.mode.chained_assignment = None\n"
        "os.environ['ANSWER'] = '42'\nmatplotlib.rcParams['figure.figsize'] = (3, 3)\n\n"
        "def answer():\n    return int(os.environ['ANSWER'])\n",
        None,
    ),
    "frames-through-libraries": (
        "import collections, dataclasses, enum, logging, typing, warnings\nimport pandas as pd\n"
        "logging.basicConfig(level=logging.INFO)\nlog = logging.getLogger(__name__)\n"
        "Pair = collections.namedtuple('Pair', 'x y')\nT = typing.TypeVar('T')\nColor = enum.Enum('Color', 'RED GREEN')\n\n"
        "@dataclasses.dataclass\nclass Box:\n    value: int = 42\n\n"
        "def answer():\n    log.info('computing %s', Pair(1, 2))\n    warnings.warn('careful', UserWarning)\n"
        "    pd.DataFrame({'a': [1]}).groupby('a').sum()\n    return Box().value\n",
        None,
    ),
    "tracebacks-and-signatures": (
        "import inspect, traceback\n\ndef answer():\n    try:\n        1 / 0\n    except ZeroDivisionError:\n"
        "        text = traceback.format_exc()\n    return 42 if 'ZeroDivisionError' in text and inspect.signature(answer) else 0\n",
        None,
    ),
    "plots-and-sklearn": (
        "import numpy as np\nimport matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
        "from sklearn.cluster import KMeans\n\n"
        "def answer():\n    fig, ax = plt.subplots()\n    ax.plot([1, 2])\n    fig.savefig('plot.png')\n    plt.close(fig)\n"
        "    KMeans(2, n_init=2, random_state=0).fit(np.random.rand(20, 2))\n    return 42\n",
        None,
    ),
    "tests-with-mocks-fixtures-and-subtests": (
        "import os\n\ndef answer():\n    return 42 if not os.listdir('.') else 0\n\ndef read(path):\n"
        "    with open(path) as f:\n        return f.read()\n",
        "import copy, io, json, logging, os, sys, unittest, warnings\nimport numpy as np\nimport pandas as pd\n"
        "from unittest import mock\nfrom unittest.mock import patch\n\n"
        "class TestCases(unittest.TestCase):\n"
        "    @classmethod\n    def setUpClass(cls):\n        cls.frame = pd.DataFrame({'a': [42]})\n"
        "    def setUp(self):\n        self.maxDiff = None\n        self.addCleanup(lambda: None)\n"
        "    @patch('os.listdir', return_value=[])\n    def test_patched(self, listdir):\n"
        "        self.assertEqual(answer(), 42)\n        listdir.assert_called_once()\n"
        "    def test_mock_open(self):\n        with mock.patch('builtins.open', mock.mock_open(read_data='hi')):\n"
        "            self.assertEqual(read('x'), 'hi')\n"
        "    def test_helpers(self):\n        with self.assertRaises(ValueError):\n            int('x')\n"
        "        with self.assertLogs('t', 'INFO'):\n            logging.getLogger('t').info('x')\n"
        "        with self.assertWarns(UserWarning):\n            warnings.warn('w')\n"
        "        for x in (1, 2):\n            with self.subTest(x=x):\n                self.assertEqual(answer() * x, 42 * x)\n"
        "        self.assertEqual(copy.deepcopy([mock.ANY]), [1])\n"
        "        np.testing.assert_allclose(self.frame['a'].to_numpy(), [answer()])\n"
        "        pd.testing.assert_frame_equal(self.frame, pd.DataFrame({'a': [answer()]}))\n"
        "        self.assertEqual(json.loads(json.dumps({'a': answer()})), {'a': 42})\n"
        "    def test_output(self):\n        with mock.patch('sys.stdout', new_callable=io.StringIO) as out:\n"
        "            print(answer())\n        self.assertEqual(out.getvalue(), '42\\n')\n",
    ),
    "async-tests": (
        RIGHT,
        "import asyncio, unittest\n\nclass TestCases(unittest.IsolatedAsyncioTestCase):\n"
        "    async def asyncSetUp(self):\n        self.value = await asyncio.sleep(0, result=42)\n"
        "    async def test_async(self):\n        self.assertEqual(answer(), self.value)\n",
    ),
    "test-class-data-and-threads": (
        "import concurrent.futures, signal\n\ndef answer():\n    signal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
        "    with concurrent.futures.ThreadPoolExecutor(2) as pool:\n        return sum(pool.map(int, [40, 2]))\n",
        "import sys, unittest\n\nclass Base:\n    def test_shared(self):\n        self.assertEqual(answer(), 42)\n\n"
        "class TestCases(Base, unittest.TestCase):\n    limit = None\n"
        "    @classmethod\n    def setUpClass(cls):\n        cls.limit = sys.getrecursionlimit()\n"
        "    def test_frames(self):\n        self.assertEqual(sys._getframe().f_code.co_name, 'test_frames')\n"
        "        self.assertEqual(answer(), 42)\n"
        "    @staticmethod\n    def test_static():\n        assert answer() == 42\n"
        "    @classmethod\n    def test_class(cls):\n        assert cls.limit and answer() == 42\n",
    ),
}


@pytest.mark.parametrize("name", sorted(HONEST))
def test_honest_programs_pass(sandbox, name):
    code, tests = HONEST[name]
    result = verify_between_controls(sandbox, code, tests or ANSWER_TESTS)
    assert result.status == "pass", result.details
