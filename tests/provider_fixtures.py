"""Where the recorded provider responses are: ``../shared/fixtures/providers``.

They live beside the repository, not in it. ``TOLLGATE_FIXTURES_DIR`` points
elsewhere. A missing folder stops the run with this message rather than
letting the fixture-driven tests collect nothing and pass.
"""

from __future__ import annotations

import os
from pathlib import Path

_DEFAULT = (
    Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "providers"
)
FIXTURES = Path(os.environ.get("TOLLGATE_FIXTURES_DIR") or _DEFAULT)

# Recordings whose response ran server-side web searches, which INDEX.md does
# not count (one completed web_search_call output item here), by fixture name.
WEB_SEARCHES = {"openai_responses_stream_reasoning": 1}

if not (FIXTURES / "INDEX.md").is_file():
    raise RuntimeError(
        f"the recorded provider fixtures are not at {FIXTURES}: the tests read "
        "../shared/fixtures/providers beside the repository (or set "
        "TOLLGATE_FIXTURES_DIR)"
    )
