"""Browser-facing files: the JavaScript client at ``/client/tornchat.js`` and the
demo chat page at ``/demo``, served from the package (no build step)."""
