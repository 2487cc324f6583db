"""PostgreSQL beside SQLite (docs/postgresql.md): the URL setting, the schema's PostgreSQL form and
`imageapi db copy`. Only this package imports the driver (asyncpg)."""
