"""Names shared by every part of the probe, defined once (the main package may import them).

Standard library only, no imports at all: this module is loaded inside the audited process.
"""

#: The name the probe package is loaded under (by path, so app modules cannot shadow it).
PRIVATE_NAME = "_patchaudit_probe"

#: Version of the events' vocabulary, in the ``start`` event's ``schema`` field. Bump it when a
#: field changes meaning; adding a field does not need it.
EVENT_SCHEMA = 1

#: Top-level packages that are the patching machinery: their frames are never "the caller" of a
#: patch or fork, and they never count as holders of stale references.
MACHINERY_PREFIXES = ("gevent", "eventlet", "zope", "greenlet")

#: Keys of ``gevent.monkey.saved`` that are gevent's bookkeeping, not a patched module.
BOOKKEEPING_PREFIX = "_gevent_saved_"
#: The ``saved`` key under which gevent records ``patch_all``'s settings.
SETTINGS_KEY = "_gevent_saved_patch_all_module_settings"

#: ``patch_all`` options whose ``False`` leaves part of the program blocking or on native threads.
IMPORTANT_PATCH_OPTIONS = (
    "thread",
    "socket",
    "os",
    "select",
    "ssl",
    "queue",
    "signal",
    "subprocess",
    "time",
    "dns",
)

#: The objects whose owner (``__module__``) the ``owners`` event reports.
OWNER_NAMES = (
    "socket.socket",
    "threading.Lock",
    "threading.Thread",
    "time.sleep",
    "select.select",
    "ssl.SSLContext",
    "queue.Queue",
)


def in_packages(name, prefixes):
    """Whether module ``name`` is one of ``prefixes`` or inside one of them."""
    for prefix in prefixes:
        if name == prefix or name.startswith(prefix + "."):
            return True
    return False
