"""podshare's pytest plugin is the `pytest11` entry point of the installed
package; this only loads it when running from a checkout that is not installed."""
from importlib.metadata import entry_points

if not any(ep.value == "podshare.plugin" for ep in entry_points(group="pytest11")):
    pytest_plugins = ["podshare.plugin"]
