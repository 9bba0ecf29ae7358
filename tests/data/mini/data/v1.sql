INSERT INTO aipoi VALUES (1, '市民中心站', ST_SetSRID(ST_MakePoint(120.2100, 30.2450), 4326)),
                         (2, '武林广场', ST_SetSRID(ST_MakePoint(120.1650, 30.2750), 4326));
INSERT INTO rfgcpy VALUES
 (1, '人防一号', '上城区', '2001-05-01', 120.50, ST_SetSRID(ST_MakePoint(120.2120, 30.2460), 4326)),
 (2, '人防二号', '上城区', '2010-01-01', 80.00,  ST_SetSRID(ST_MakePoint(120.2140, 30.2470), 4326)),
 (3, '人防三号', '西湖区', '2015-07-01', 80.00,  ST_SetSRID(ST_MakePoint(120.1300, 30.2600), 4326)),
 (4, '人防三号', '西湖区', NULL,         NULL,   ST_SetSRID(ST_MakePoint(120.1310, 30.2610), 4326)),
 (5, '人防五号', '拱墅区', '2020-12-31', 300.25, ST_SetSRID(ST_MakePoint(120.1660, 30.2760), 4326));
INSERT INTO district VALUES
 (1, '上城区', ST_GeomFromText('POLYGON((120.19 30.22, 120.23 30.22, 120.23 30.26, 120.19 30.26, 120.19 30.22))', 4326)),
 (2, '西湖区', ST_GeomFromText('POLYGON((120.10 30.24, 120.15 30.24, 120.15 30.28, 120.10 30.28, 120.10 30.24))', 4326));
