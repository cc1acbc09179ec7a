from ossft.cli import app

app(prog_name="ossft")
