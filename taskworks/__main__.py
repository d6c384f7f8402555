from taskworks.cli.main import run

run()
