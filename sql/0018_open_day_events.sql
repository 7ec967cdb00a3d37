-- The open day's event sums up to a later instant than its visits (docs/read-model.md,
-- "The open day"). A visit can change until the session timeout has passed, so a
-- prefix holds only the visits that ended an hour ago; an event, once written, never
-- changes, and the writer marks the day of any event written more than EVENT_MARK_AGE
-- (5 minutes) after its receipt. So a prefix's rollup_events rows (page, event and prop
-- breakdowns, the event totals) may cover the events received up to `events_until`,
-- about a quarter of an hour ago, and the query reads far fewer raw events for them.
-- rollup_hours and rollup_visits stay cut at `until`.
ALTER TABLE rollup_prefix ADD COLUMN events_until timestamptz;
UPDATE rollup_prefix SET events_until = until;
ALTER TABLE rollup_prefix ALTER COLUMN events_until SET NOT NULL;
ALTER TABLE rollup_prefix ADD CONSTRAINT rollup_prefix_events_later
    CHECK (events_until >= until);

-- Raw custom events, found without reading the pageviews around them: a breakdown by
-- custom event or property with a filter, and the raw edges of any event query, read
-- a few percent of a day's events. Partial, so pageviews (most writes) never touch it.
CREATE INDEX events_site_custom ON events (site_id, received_at)
    WHERE picolytics_is_custom_event(name);
