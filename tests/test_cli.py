"""The command line a new user meets first: help, listings and argument errors answer at
once (torch is not loaded for them) and say one line; Ctrl-C says one line too."""

import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from initbench.core.activations import (
    ACTIVATION_NAMES,
    QUADRATURE_GAINS,
    calculate_gain,
    get_activation,
)

PROBE = (
    "import sys\n"
    "from initbench import cli\n"
    "sys.argv = ['initbench', *sys.argv[1:]]\n"
    "try:\n"
    "    cli.main()\n"
    "except SystemExit as exit:\n"
    "    print('exit', exit.code, 'torch' in sys.modules)\n"
)


def _cli(*args):
    env = os.environ | {"INITBENCH_DEBUG": ""}
    return subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["list"],
        ["list", "archs"],
        ["list", "activations"],
        ["list", "presets"],
        ["list", "datasets"],
        ["sweep", "--help"],
    ],
)
def test_help_and_listings_do_not_load_torch(args):
    done = _cli(*args)
    assert done.stdout.strip().splitlines()[-1] == "exit 0 False", done.stdout + done.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["publish"], "Missing argument"),
        (["sweep", "--seeds", "abc"], "Invalid value for '--seeds'"),
        (["list", "bogus"], "'bogus' is not one of"),
        (["sweep", "--no-such-flag"], "No such option: --no-such-flag"),
        (["sweep", "--archs", "rnn", "--out", "x"], "unknown arch 'rnn'"),
    ],
)
def test_argument_errors_are_one_line_exit_2_without_torch(args, message):
    done = _cli(*args)
    assert done.stdout.strip().splitlines()[-1] == "exit 2 False"
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith("initbench: error: ") and message in done.stderr


def test_ctrl_c_while_starting_is_one_line():
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "initbench.cli",
            "sweep",
            "--depths",
            "2",
            "--out",
            "/nonexistent/x",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.4)  # in the middle of importing torch
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert stderr.strip().startswith("initbench: interrupted"), stderr
    assert "Traceback" not in stderr


def test_gains_equal_torch_calculate_gain_and_quadrature():
    for name in ACTIVATION_NAMES:
        act = get_activation(name)
        if act.gain_name is not None:
            assert act.gain() == pytest.approx(
                torch.nn.init.calculate_gain(act.gain_name, act.gain_param)
            )
    assert calculate_gain("leaky_relu", 0.2) == pytest.approx(
        torch.nn.init.calculate_gain("leaky_relu", 0.2)
    )
    nodes, weights = np.polynomial.hermite.hermgauss(200)
    z = torch.tensor(nodes * math.sqrt(2), dtype=torch.float64)
    w = torch.tensor(weights / math.sqrt(math.pi), dtype=torch.float64)
    for name, gain in QUADRATURE_GAINS.items():
        second_moment = float((get_activation(name).fn(z) ** 2 * w).sum())
        assert gain == pytest.approx(1 / math.sqrt(second_moment), rel=1e-10)
