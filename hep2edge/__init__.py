"""hep2edge: train, export and run a multi-task U-Net for HEp-2 IIF images at the microscope."""

__version__ = "0.1.0"
