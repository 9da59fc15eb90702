"""HairCLIP for Krita: Filters > HairCLIP... edits hair by text, colour or reference with a local server.

Layers of the package: kritadoc (thin Krita wrappers), jobs (an edit task and the server connection),
model (the dialog's state, no widgets), ui (widgets only), extension (the menu action), live and
docker (the preview docker's model and widgets), scripting (the
documented entry point for scripts: hairclip.scripting.run_edit). The server client and the
editor-independent logic come from hairclip_shared; `hairclip install-plugin krita` puts it, pyzmq and
msgpack into vendor/ beside this file.
"""

import os
import sys

_VENDOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vendor")
if os.path.isdir(_VENDOR) and _VENDOR not in sys.path:
    sys.path.insert(0, _VENDOR)  # our pinned copies win over whatever else Krita's Python has


def _register() -> None:
    from krita import Krita

    from .extension import HairclipExtension

    app = Krita.instance()
    app.addExtension(HairclipExtension(app))
    try:
        from .docker import register
    except ImportError:  # no Qt binding: only the mock `krita` of the unit tests runs without one
        return
    register(app)


try:
    import krita as _krita
except ImportError:  # imported outside Krita (tests, tools): nothing to register
    _krita = None
if _krita is not None and _krita.Krita.instance() is not None:
    _register()
