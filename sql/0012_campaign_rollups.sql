-- Campaigns in the read model (docs/read-model.md): the report's Campaigns table groups
-- visits by utm_source, utm_medium and utm_campaign at once, so the roller now also
-- writes rollup_visits rows of the dimension 'campaign': parent = utm_source, U+001F,
-- utm_medium (stored text holds no control character: text.py), value = utm_campaign.
-- A day rolled before this migration has none: campaigns read it raw until it is
-- rolled again (`picolytics rollup --rebuild`).
ALTER TABLE rollup_days ADD COLUMN campaigns boolean NOT NULL DEFAULT false;
