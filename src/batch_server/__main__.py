from batch_server.cli import app

app()
