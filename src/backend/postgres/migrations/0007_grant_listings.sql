-- Version 7: a user's or a client's grants page in grant id order, straight off an index
-- (issue 29: a listing read every match and sorted it). The user-and-client index serves
-- "every grant of this user to this app" in the same order.
DROP INDEX grants_by_user;
DROP INDEX grants_by_client;
CREATE INDEX grants_by_user ON grants (user_id, grant_id);
CREATE INDEX grants_by_client ON grants (client_id, grant_id);
CREATE INDEX grants_by_user_and_client ON grants (user_id, client_id, grant_id);
