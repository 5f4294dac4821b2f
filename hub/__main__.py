import gc

# Off before the first import: `hub serve` starts without the collector, any other command
# turns it on once its arguments are read (hub.cli).
gc.disable()

from hub.cli import main  # noqa: E402

main()
