-- Run once by the postgres image when the `pgdata` volume is empty: the basic-auth app's own
-- database, beside (never inside) the tracking database that POSTGRES_DB creates. A volume made
-- before this file existed needs it made by hand, see docs/deployment.md.
CREATE DATABASE mlflow_auth;
