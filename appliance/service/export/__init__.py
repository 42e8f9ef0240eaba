"""DICOM export of a finished reconstruction: DICOM SEG, Encapsulated STL per structure, C-STORE to PACS.

Every object is built referencing the source instances, then de-identified (PS3.15 Basic Profile with the box's
options) right before it leaves the box, so CT references, SEG and STL share consistently remapped UIDs.
"""
