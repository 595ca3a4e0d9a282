-- Version 9: which one-time upgrades of the records ran (`Store::upgraded`), so a node starts
-- without rereading every record to find there is nothing left to upgrade (issue 29).
CREATE TABLE upgrades (
    name text PRIMARY KEY,
    at   bigint NOT NULL
);
