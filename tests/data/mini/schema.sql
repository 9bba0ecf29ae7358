CREATE EXTENSION IF NOT EXISTS postgis;
CREATE TABLE rfgcpy (
    id integer PRIMARY KEY,
    name text,
    ssqx text,
    jgsj date,
    mj numeric(10,2),
    geom geometry(Point, 4326)
);
COMMENT ON TABLE rfgcpy IS '人防工程';
COMMENT ON COLUMN rfgcpy.ssqx IS '所属区县';
CREATE TABLE aipoi (
    id integer PRIMARY KEY,
    name text,
    geom geometry(Point, 4326)
);
CREATE TABLE district (
    id integer PRIMARY KEY,
    name text,
    geom geometry(Polygon, 4326)
);
