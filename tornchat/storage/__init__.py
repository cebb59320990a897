"""Where messages are kept: the repository, one module per SQL dialect, the
group-commit writer, peewee models, the database URL and migrations.

Thread rule: everything here blocks and runs off the IOLoop (the store's
executor or the writer's own thread).
"""
