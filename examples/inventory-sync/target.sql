CREATE TABLE cmdb_ci (
  ci_id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  ip TEXT NOT NULL,
  os TEXT NOT NULL,
  location TEXT NOT NULL
);
INSERT INTO cmdb_ci VALUES
  ('SN-1001', 'core-sw-01',  '10.0.0.1', 'IOS-XE 17.9', 'AMS'),
  ('SN-1002', 'core-sw-02',  '10.0.0.2', 'IOS-XE 17.9', 'AMS'),
  ('SN-1003', 'edge-rtr-01', '10.0.1.1', 'JunOS 22.4',  'FRA'),
  ('SN-1004', 'edge-rtr-02', '10.0.1.2', 'JunOS 22.4',  'FRA'),
  ('SN-1005', 'fw-01',       '10.0.2.1', 'PAN-OS 11.1', 'LON'),
  ('SN-1006', 'fw-02',       '10.0.2.2', 'PAN-OS 11.1', 'LON'),
  ('SN-1007', 'wlc-01',      '10.0.3.1', 'AireOS 8.10', 'AMS'),
  ('SN-1008', 'lb-01',       '10.0.4.1', 'TMOS 17.1',   'FRA'),
  ('SN-0999', 'old-fw-00',   '10.0.2.0', 'PAN-OS 9.1',  'LON');
