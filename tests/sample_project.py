"""Files of a sample project whose commits pass, fail, raise and fail to import, for the tests."""

PASSING = {
    "pkg/__init__.py": "",
    "pkg/maths.py": (
        '"""Maths.\n\n>>> double(2)\n4\n"""\n\n\ndef double(x):\n    """\n    >>> double(3)\n    6\n    """\n'
        "    return 2 * x\n"
    ),
    "tests/__init__.py": "",
    "tests/test_maths.py": (
        "import doctest\nimport unittest\n\nimport pkg.maths\nfrom pkg.maths import double\n\n\n"
        "def load_tests(loader, tests, ignore):\n"
        "    tests.addTests(doctest.DocTestSuite(pkg.maths))\n    return tests\n\n\n"
        "class TestDouble(unittest.TestCase):\n"
        "    def test_two(self):\n        self.assertEqual(double(2), 4)\n\n"
        "    def test_many(self):\n        for n in range(3):\n            with self.subTest(n=n):\n"
        "                self.assertEqual(double(n), n + n)\n\n"
        "    @unittest.skip('not today')\n    def test_skipped(self):\n        pass\n\n"
        "    @unittest.expectedFailure\n    def test_known_bug(self):\n        self.assertEqual(1, 2)\n"
    ),
}

FAILING = {
    "tests/test_broken.py": (
        "import unittest\n\n\nclass TestBroken(unittest.TestCase):\n"
        "    def test_assert(self):\n        self.assertEqual(1 + 1, 3, 'arithmetic')\n\n"
        "    def test_raises(self):\n        raise KeyError('boom')\n\n"
        "    def test_subtests(self):\n        for n in range(4):\n            with self.subTest(n=n):\n"
        "                self.assertLess(n, 2)\n\n"
        "    def test_fine(self):\n        print('hello from a test')\n"
    ),
}

IMPORT_FAILING = {
    "tests/test_import.py": "import unittest\nimport no_such_module_anywhere\n\n\nclass T(unittest.TestCase):\n"
                            "    def test_x(self):\n        pass\n",
}

NO_TESTS = {"README.md": "nothing to test\n", "lib.py": "X = 1\n"}
