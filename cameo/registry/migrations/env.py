from alembic import context

from cameo.registry._models import Base

config = context.config
engine = config.attributes.get("engine")
if engine is None:  # `alembic` run from the command line against a URL
    from cameo.registry._db import make_engine

    engine = make_engine(config.get_main_option("sqlalchemy.url"))

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
