CREATE TABLE devices (
  serial TEXT PRIMARY KEY,
  hostname TEXT NOT NULL,
  ip_address TEXT NOT NULL,
  os_name TEXT NOT NULL,
  os_version TEXT NOT NULL,
  site TEXT NOT NULL
);
INSERT INTO devices VALUES
  ('SN-1001', 'CORE-SW-01', '10.0.0.1',  'IOS-XE', '17.9', 'ams'),
  ('SN-1002', 'core-sw-02', '10.0.0.2',  'IOS-XE', '17.9', 'ams'),
  ('SN-1003', 'edge-rtr-01', '10.0.1.1', 'JunOS',  '22.4', 'fra'),
  ('SN-1004', 'edge-rtr-02', '10.0.1.2', 'JunOS',  '23.2', 'fra'),
  ('SN-1005', 'fw-01',       '10.0.2.1', 'PAN-OS', '11.1', 'lon'),
  ('SN-1006', 'fw-02',       '10.0.2.9', 'PAN-OS', '11.1', 'lon'),
  ('SN-1007', 'wlc-01',      '10.0.3.1', 'AireOS', '8.10', 'ams'),
  ('SN-1008', 'lb-01',       '10.0.4.1', 'TMOS',   '17.1', 'fra'),
  ('SN-1009', 'esx-01',      '10.0.5.1', 'ESXi',   '8.0',  'ams'),
  ('SN-1010', 'esx-02',      '10.0.5.2', 'ESXi',   '8.0',  'ams');
