-- One PostgreSQL for both servers: a database (and owner) each.
-- Runs once, when the postgres volume is empty (docker-entrypoint-initdb.d).
CREATE DATABASE prefect OWNER chappie;
CREATE DATABASE mlflow OWNER chappie;
