"""Numbered schema migrations, applied by ``tornchat migrate`` (peewee's runner)."""
