-- The seed's Hangzhou tables, as the diagnostics cases see them.
CREATE EXTENSION IF NOT EXISTS postgis;
CREATE TABLE rfgcpy (  -- 人防工程
    id serial PRIMARY KEY, name varchar(255), jldw text, qsdw text, jsskwsd text, ssqx text,
    tyaqpjdj text, jgsj text, geom geometry(Point, 4326)
);
COMMENT ON TABLE rfgcpy IS '人防工程';
CREATE TABLE gxssln (  -- 长输管线
    id serial PRIMARY KEY, name text, gdlx text, gj numeric, geom geometry(MultiLineString, 4326)
);
CREATE TABLE aipoi (  -- POI
    id serial PRIMARY KEY, name text, type text, address text, ssqx text, geom geometry(Point, 4326)
);
CREATE INDEX aipoi_geom_idx ON aipoi USING gist (geom);
