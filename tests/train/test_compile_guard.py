"""``train.compile`` never keeps recompiling: past ``RECOMPILE_LIMIT`` graphs torch runs the code
eagerly, and the run says so in one line, once (torch's own multi-line warning is not shown)."""
import torch

from tunesmith.train import kernels


def test_recompiles_past_the_limit_fall_back_with_one_line(capsys, caplog):
    kernels.watch_recompiles()
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    class Layer(torch.nn.Module):  # a shape-specialised graph per batch size (dynamic=False)
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)

        def forward(self, x):
            return torch.relu(self.lin(x)) * x.shape[0]

    layer = Layer()
    layer.compile(backend=backend, dynamic=False)
    eager = Layer()
    eager.load_state_dict(layer.state_dict())
    for n in range(1, 3 * kernels.RECOMPILE_LIMIT):
        x = torch.randn(n, 4)
        torch.testing.assert_close(layer(x), eager(x))  # the same answers, compiled or not
    assert len(graphs) == kernels.RECOMPILE_LIMIT  # then no more compiling
    out = capsys.readouterr().out
    assert out == kernels.FALLBACK + "\n"  # once, one line
    assert not any("recompile_limit" in r.getMessage() for r in caplog.records)
