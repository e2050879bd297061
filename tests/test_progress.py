"""Progress: plain lines off a terminal, a bar on one, and an ETA at the training-only rate."""

import io

from loraclf.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def record(step, elapsed):
    return {"step": step, "loss": 0.5, "samples_per_s": 12.0, "elapsed_s": elapsed}


def test_off_a_terminal_each_record_is_one_plain_line_with_the_training_only_eta():
    stream, logged = io.StringIO(), []
    progress = Progress(total=100, initial=0, enabled=True, log=logged.append, stream=stream)
    for step in range(1, 41):
        progress.advance()
    # 40 steps in 20 s of training (validation time is not in elapsed_s): 60 more steps take 30 s.
    progress.record(record(40, 20.0))
    progress.write("step 40 epoch 1.00: val loss 0.1")
    progress.close()
    assert stream.getvalue() == "step 40/100 (40%): loss 0.5000, 12.0 samples/s, ETA 00:30\n"
    assert logged == ["step 40 epoch 1.00: val loss 0.1"]


def test_on_a_terminal_a_bar_carries_the_eta_and_lines_pass_above_it():
    stream = Terminal()
    progress = Progress(total=100, initial=10, enabled=True, log=print, stream=stream)
    progress.advance()
    progress.record(record(10, 5.0))
    progress.write("validation line")
    progress.close()
    shown = stream.getvalue()
    assert "\r" in shown and "ETA 00:45" in shown and "validation line\n" in shown


def test_disabled_it_prints_nothing():
    stream = Terminal()
    progress = Progress(total=10, initial=0, enabled=False, log=print, stream=stream)
    progress.advance()
    progress.record(record(1, 1.0))
    progress.close()
    assert stream.getvalue() == ""
