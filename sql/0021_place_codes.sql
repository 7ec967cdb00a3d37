-- Place codes (issue #18): the region's ISO 3166-2 code ("US-CA") and the city's
-- GeoNames id ("5391959", as text) of each visit, for Plausible's visit:region and
-- visit:city, as the GeoIP database gives them (enrich/geo.py: MaxMind's layout has
-- them; DB-IP lite and the flat @ip-location-db layout do not, and leave ''). Taken
-- from the visit's first event, as its region and city names are. Codes of places,
-- never coordinates: nothing more precise about a visitor than the names kept before.
-- Visits stored before this migration keep '' (unknown): adding a column with a
-- constant default rewrites no table.
ALTER TABLE sessions ADD COLUMN region_code text NOT NULL DEFAULT '';
ALTER TABLE sessions ADD COLUMN city_code text NOT NULL DEFAULT '';

-- The roller now writes rollup_visits and rollup_segment_visits rows of 'region_code'
-- and 'city_code', each with its visit's country as the parent (dimensions.PARENT_OF).
-- Every visit of a day rolled (or of an open day's prefix rolled) before this
-- migration has the codes '', so the rows the roller would write for it are its
-- country rows under the value '' (not its totals rows, as sql/0020_hostnames.sql
-- copied: there the parent is the country, one row per country). Added here, so rolled
-- days and prefixes answer exactly as their raw rows do and no day needs rolling again.
INSERT INTO rollup_visits (site_id, day, dimension, parent, value,
                           visitors, visits, bounces, duration_s, pageviews)
SELECT r.site_id, r.day, d.dimension, r.value, '',
       r.visitors, r.visits, r.bounces, r.duration_s, r.pageviews
FROM rollup_visits r
CROSS JOIN (VALUES ('region_code'), ('city_code')) AS d (dimension)
WHERE r.dimension = 'country';

-- Segment rollups hold no dimension with itself: in the segment 'country' the
-- country is the segment value, so the totals rows (dimension '') are the country rows.
INSERT INTO rollup_segment_visits (site_id, day, segment, segment_value, dimension, parent,
                                   value, visitors, visits, bounces, duration_s, pageviews)
SELECT r.site_id, r.day, r.segment, r.segment_value, d.dimension,
       CASE WHEN r.segment = 'country' THEN r.segment_value ELSE r.value END, '',
       r.visitors, r.visits, r.bounces, r.duration_s, r.pageviews
FROM rollup_segment_visits r
CROSS JOIN (VALUES ('region_code'), ('city_code')) AS d (dimension)
WHERE (r.segment = 'country' AND r.dimension = '')
   OR (r.segment <> 'country' AND r.dimension = 'country');

-- And the split counts of sql/0019_segment_splits.sql under those rows. In the segment
-- 'country' a row's visits all have its parent's country, so it splits nobody and has
-- none.
INSERT INTO rollup_segment_splits (site_id, day, segment, grain, dimension, parent, value,
                                   segment_values, visitors)
SELECT s.site_id, s.day, s.segment, s.grain, d.dimension, s.value, '', s.segment_values,
       s.visitors
FROM rollup_segment_splits s
CROSS JOIN (VALUES ('region_code'), ('city_code')) AS d (dimension)
WHERE s.grain = 'visits' AND s.dimension = 'country';
